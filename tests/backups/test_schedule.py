"""Daily backups: due once a day at their time, never twice, never when off; a busy sandbox is
tried again at the next tick."""

from datetime import datetime, time, timedelta
from unittest import mock

import pytest
from django.utils import timezone

from backups import services
from backups.models import Backup, BackupSchedule
from backups.tasks import backup_task
from sandboxes import services as sandbox_services

pytestmark = pytest.mark.django_db
ACTOR = sandbox_services.SystemActor("test")


def at(hour: int, minute: int) -> datetime:
    return timezone.make_aware(datetime.combine(timezone.localdate(), time(hour, minute)))


def test_a_schedule_starts_one_backup_a_day_at_its_time(make_sandbox, fake_engine, clean_workspace, django_capture_on_commit_callbacks):
    sandbox = make_sandbox("daily")
    services.schedule_set(actor=ACTOR, sandbox=sandbox, enabled=True, at=time(3, 0), keep_last=7, keep_days=None, now=at(2, 0))
    assert services.run_due_schedules(at(2, 59)) == 0
    with django_capture_on_commit_callbacks() as queued:
        assert services.run_due_schedules(at(3, 1)) == 1
    backup = Backup.objects.get(sandbox=sandbox)
    with mock.patch.object(backup_task, "delay") as delay:
        for callback in queued:
            if callback.__qualname__.startswith("enqueue_on_commit"):
                callback()
    delay.assert_called_once_with(backup.pk)  # its task is queued on commit
    assert backup.kind == Backup.Kind.SCHEDULED and backup.created_by_name == "schedule"
    sandbox_services.finish(sandbox, "backup", None, "", audited=False)
    assert services.run_due_schedules(at(23, 0)) == 0  # done for today
    assert BackupSchedule.objects.get(sandbox=sandbox).last_run_on == timezone.localdate()


def test_a_busy_sandbox_is_tried_again_and_an_off_schedule_never_runs(make_sandbox, fake_engine, clean_workspace):
    busy = make_sandbox("busy")
    off = make_sandbox("off")
    services.schedule_set(actor=ACTOR, sandbox=busy, enabled=True, at=time(1, 0), keep_last=None, keep_days=3, now=at(0, 30))
    services.schedule_set(actor=ACTOR, sandbox=off, enabled=False, at=time(1, 0), keep_last=1, keep_days=None, now=at(0, 30))
    sandbox_services.sandbox_request_action(actor=ACTOR, sandbox=busy, action="stop", enqueue=False)
    assert services.run_due_schedules(at(1, 5)) == 0
    assert BackupSchedule.objects.get(sandbox=busy).last_run_on is None  # not marked: the next tick tries again
    sandbox_services.sandbox_perform(sandbox_id=busy.pk, action="stop")
    assert services.run_due_schedules(at(1, 6)) == 1
    assert not Backup.objects.filter(sandbox=off).exists()


def test_a_schedule_keeps_at_least_one(make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("tiny")
    with pytest.raises(sandbox_services.SandboxError):
        services.schedule_set(actor=ACTOR, sandbox=sandbox, enabled=True, at=time(1, 0), keep_last=0, keep_days=None)
    # Nor more than the bounds of a checkpoint's rule: a million days made every rotation fail.
    for keep_last, keep_days in ((1001, None), (None, 10**6), (5, 3651)):
        with pytest.raises(sandbox_services.SandboxError, match="at most"):
            services.schedule_set(actor=ACTOR, sandbox=sandbox, enabled=True, at=time(1, 0), keep_last=keep_last, keep_days=keep_days)


def test_a_schedule_set_after_todays_time_first_runs_at_the_next_one(make_sandbox, fake_engine, clean_workspace):
    """Set at 22:04 for 03:00: nothing 28 s later, the first backup at 03:00 the next day."""
    sandbox = make_sandbox("late")
    services.schedule_set(actor=ACTOR, sandbox=sandbox, enabled=True, at=time(3, 0), keep_last=7, keep_days=None, now=at(22, 4))
    assert services.run_due_schedules(at(22, 4) + timedelta(seconds=28)) == 0
    assert services.run_due_schedules(at(23, 59)) == 0
    assert not Backup.objects.exists()
    assert services.run_due_schedules(at(3, 0) + timedelta(days=1)) == 1
    assert Backup.objects.get(sandbox=sandbox).kind == Backup.Kind.SCHEDULED


def test_changing_or_enabling_a_schedule_late_does_not_run_it_at_once(make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("toggled")
    services.schedule_set(actor=ACTOR, sandbox=sandbox, enabled=False, at=time(3, 0), keep_last=7, keep_days=None, now=at(1, 0))
    services.schedule_set(actor=ACTOR, sandbox=sandbox, enabled=True, at=time(3, 0), keep_last=7, keep_days=None, now=at(9, 0))
    assert services.run_due_schedules(at(9, 1)) == 0  # re-enabled after today's 03:00: tomorrow's is the first
    services.schedule_set(actor=ACTOR, sandbox=sandbox, enabled=True, at=time(10, 0), keep_last=7, keep_days=None, now=at(9, 2))
    assert services.run_due_schedules(at(9, 59)) == 0
    assert services.run_due_schedules(at(10, 0)) == 1  # moved to a time still ahead today: it runs today
