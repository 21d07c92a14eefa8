"""Bounded attempts for the tasks that hold no sandbox claim to count them (a restore's claim
counts its own): verifying an archive and checking an import. Their tasks are acknowledged
late, so a worker killed while it runs one (say, out of memory on a hostile archive) gets the
task back; each delivery is counted on the backup's row, and past SANDBOX_MAX_ATTEMPTS the
task ends with the reason instead of running again."""

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from sandboxes.services import SystemActor

from ..models import Backup
from .backup import audit_backup, backup_verify


def take_attempt(backup_id: int, **state) -> Backup | None:
    """Count one more delivery of a task for the backup (if its row, in `state`, is still
    there); the row as it is now, its `attempts` included."""
    if not Backup.objects.filter(pk=backup_id, **state).update(attempts=F("attempts") + 1):
        return None
    return Backup.objects.filter(pk=backup_id).first()


def gave_up(backup: Backup) -> str | None:
    """The reason to stop, once the backup's task has been delivered too often; else None."""
    if backup.attempts <= settings.SANDBOX_MAX_ATTEMPTS:
        return None
    return f"Given up after {settings.SANDBOX_MAX_ATTEMPTS} attempts: its worker stopped each time."


def attempts_done(backup_id: int) -> None:
    Backup.objects.filter(pk=backup_id).update(attempts=0)


def backup_verify_perform(*, backup_id: int) -> Backup | None:
    """The verify task's run: backup_verify, unless its earlier deliveries all died."""
    backup = take_attempt(backup_id)
    if backup is None:
        return None
    reason = gave_up(backup)
    if reason is None:
        backup = backup_verify(backup=backup)
        attempts_done(backup_id)
        return backup
    with transaction.atomic():
        Backup.objects.filter(pk=backup_id).update(verified_at=timezone.now(), verified_ok=False, verify_detail=reason, attempts=0)
        audit_backup(SystemActor("system"), backup, "backup.verify_failed", {"problems": [reason]})
    backup.refresh_from_db()
    return backup
