"""A task that hits its Celery soft time limit releases the sandbox's claim and says why. Celery
raises SoftTimeLimitExceeded in the task wherever it is; here the fake engine's call raises it,
as a Docker call that outlasted the limit would."""

import os

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from audit.models import AuditEvent
from backups import archive
from backups import services as backups
from backups.models import Backup
from sandboxes import services
from sandboxes.models import Sandbox

pytestmark = pytest.mark.django_db
ACTOR = services.SystemActor("test")


def over_the_limit(*args, **kwargs):
    raise SoftTimeLimitExceeded()


def test_an_action_past_its_soft_limit_releases_its_claim_and_says_so(make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("slowstop")
    fake_engine.stop = over_the_limit
    services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="stop", enqueue=False)
    assert Sandbox.objects.get(pk=sandbox.pk).pending_action == "stop"

    services.sandbox_perform(sandbox_id=sandbox.pk, action="stop")
    sandbox.refresh_from_db()
    assert sandbox.pending_action == "" and sandbox.heartbeat_at is None
    assert sandbox.status == "error"
    assert f"took longer than its time limit ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s)" in sandbox.status_detail
    failed = AuditEvent.objects.get(sandbox_uuid=sandbox.uuid, action="sandbox.stop.failed")
    assert "time limit" in failed.details["detail"]
    # Released: the next action is taken at once.
    del fake_engine.stop
    services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="stop", enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="stop")
    assert Sandbox.objects.get(pk=sandbox.pk).status == "stopped"


def test_a_backup_past_its_soft_limit_ends_failed_and_frees_the_sandbox(make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("slowbackup")
    assert not sandbox.in_pool  # plain folders: the backup holds the sandbox's claim while it reads
    (sandbox.workspace_path / "Projects" / "data").write_bytes(b"x" * 100_000)
    fake_engine.read_archive = over_the_limit  # reading the home, after the folders
    backup = backups.backup_request(actor=ACTOR, sandbox=sandbox, enqueue=False)
    assert Sandbox.objects.get(pk=sandbox.pk).pending_action == "backup"

    backups.backup_perform(backup_id=backup.pk)
    backup.refresh_from_db()
    assert backup.status == Backup.Status.FAILED
    assert backup.detail == "The backup took longer than its task's time limit and was stopped."
    assert not backup.path.exists() and not os.path.exists(archive.partial_path(str(backup.path)))
    sandbox.refresh_from_db()
    assert sandbox.pending_action == "" and sandbox.status == "running"
    assert AuditEvent.objects.filter(action="backup.failed", sandbox_uuid=sandbox.uuid).exists()
    backups.backup_delete(actor=ACTOR, backup=backup)
    assert not Backup.objects.filter(pk=backup.pk).exists()
