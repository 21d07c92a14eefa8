"""Daily backups at a set time: the schedule per sandbox, and the periodic task's check."""

import logging
from datetime import datetime, time

from django.db import transaction
from django.utils import timezone

from sandboxes.models import Sandbox
from sandboxes.services import SandboxError, SystemActor
from sandboxes.services.auditing import audit
from teams.permissions import Role, authorize

from ..models import Backup, BackupSchedule
from .backup import backup_request

log = logging.getLogger(__name__)


KEEP_LAST_MAX = 1000
KEEP_DAYS_MAX = 3650


def schedule_set(
    *,
    actor,
    sandbox: Sandbox,
    enabled: bool,
    at: time,
    keep_last: int | None,
    keep_days: int | None,
    source_ip: str | None = None,
    now: datetime | None = None,
) -> BackupSchedule:
    """Set (or change) the sandbox's daily backup. At least one of the two limits is kept. The
    first run is the next time `at` comes: if today's has passed, today counts as done, else a
    schedule set at 22:04 for 03:00 would run at once (the check runs what is due today)."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    if keep_last is not None and keep_last < 1:
        raise SandboxError("Keep at least the newest backup.")
    if keep_days is not None and keep_days < 1:
        raise SandboxError("Keep backups for at least a day.")
    # The bounds of a sandbox's checkpoint retention (storage.services), which follows this rule.
    if keep_last is not None and keep_last > KEEP_LAST_MAX:
        raise SandboxError(f"Keep at most the newest {KEEP_LAST_MAX} backups.")
    if keep_days is not None and keep_days > KEEP_DAYS_MAX:
        raise SandboxError(f"Keep backups for at most {KEEP_DAYS_MAX} days.")
    local = timezone.localtime(now or timezone.now())
    done_on = local.date() if at <= local.time() else None
    with transaction.atomic():
        schedule, _ = BackupSchedule.objects.update_or_create(
            sandbox=sandbox,
            defaults={"enabled": enabled, "at": at, "keep_last": keep_last, "keep_days": keep_days, "last_run_on": done_on},
        )
        audit(
            actor,
            "backup.schedule_set",
            sandbox,
            {"enabled": enabled, "at": at.strftime("%H:%M"), "keep_last": keep_last, "keep_days": keep_days},
            source_ip,
        )
    return schedule


def due_schedules(now: datetime | None = None) -> list[BackupSchedule]:
    """The enabled schedules whose time has come today and that have not run today (none of a
    sandbox an incident holds: its backups from before the incident must not rotate away)."""
    local = timezone.localtime(now or timezone.now())
    found = BackupSchedule.objects.filter(enabled=True, at__lte=local.time(), sandbox__on_hold=False).select_related("sandbox__team")
    return [s for s in found if s.last_run_on != local.date() and s.sandbox.status != Sandbox.Status.DESTROYED]


def run_due_schedules(now: datetime | None = None) -> int:
    """Request today's backup of every due schedule (once a day each: the day is marked first,
    with a guard, so two beats cannot both start one). A sandbox that is busy is tried again at
    the next tick."""
    today = timezone.localtime(now or timezone.now()).date()
    started = 0
    for schedule in due_schedules(now):
        try:
            with transaction.atomic():
                marked = BackupSchedule.objects.filter(pk=schedule.pk).exclude(last_run_on=today).update(last_run_on=today)
                if not marked:
                    continue
                backup_request(actor=SystemActor("schedule"), sandbox=schedule.sandbox, kind=Backup.Kind.SCHEDULED)
            started += 1
        except SandboxError as exc:
            log.info("scheduled backup of %s postponed: %s", schedule.sandbox.name, exc)
    return started
