"""A task that hits its Celery soft time limit releases the sandbox's claim and says why. Celery
raises SoftTimeLimitExceeded in the task wherever it is: in the fast tier the fake engine's call
raises it, as a Docker call that outlasted the limit would; on the real engine a worker with a
10 s limit runs a Stop that Docker makes last a minute."""

import os
import time

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from audit.models import AuditEvent
from backups import archive
from backups import services as backups
from backups.models import Backup
from sandboxes import services
from sandboxes.models import Sandbox
from tests.sandboxes.test_tasks_end import stubborn_image  # noqa: F401 - a fixture
from tests.support.processes import start_worker
from tests.support.waiting import wait_for

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


def test_a_restore_past_its_soft_limit_ends_failed_and_frees_the_sandbox(make_sandbox, fake_engine, clean_workspace):
    from backups.models import Restore
    from tests.backups.helpers import backup_row, hostile_archive, member

    sandbox = make_sandbox("slowrestore")
    config = backups.config_of(sandbox)
    path = backups.backup_root() / f"{sandbox.name}-by-hand.tar.gz"
    backup = backup_row(sandbox, path, hostile_archive(path, [member("workspace/Projects/a.txt", b"a")], config=config), config)
    (sandbox.workspace_path / "Projects" / "keep.txt").write_text("kept")
    fake_engine.read_archive = over_the_limit  # while the safety backup reads the home, the sandbox frozen
    restore = backups.restore_request(actor=ACTOR, backup=backup, sandbox=sandbox, enqueue=False)

    backups.restore_perform(restore_id=restore.pk)
    restore.refresh_from_db()
    assert restore.status == Restore.Status.FAILED
    assert restore.detail.startswith("The restore took longer than its task's time limit and was stopped."), restore.detail
    sandbox.refresh_from_db()
    assert sandbox.pending_action == "" and sandbox.heartbeat_at is None
    assert fake_engine.containers[sandbox.container_id].status == "running"  # thawed: nothing was changed
    assert (sandbox.workspace_path / "Projects" / "keep.txt").read_text() == "kept"
    assert not (sandbox.workspace_path / "Projects" / "a.txt").exists()
    safety = restore.safety_backup
    assert safety is not None and safety.status == Backup.Status.FAILED
    assert not os.path.exists(archive.partial_path(str(safety.path)))


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_past_its_soft_limit_releases_the_claim_and_says_why(make_sandbox, stubborn_image, own_queue, monkeypatch):  # noqa: F811
    from controlpanel.celery import app

    sandbox = make_sandbox("soft-limit", image=stubborn_image)  # its main process ignores SIGTERM
    # TASK_SOFT_TIME_LIMIT=10 for the panel that sends the task and the worker that runs it: the
    # limits travel in the task's message, as the sender's settings have them.
    task = app.tasks["sandboxes.tasks.sandbox_action_task"]
    monkeypatch.setattr(task, "soft_time_limit", 10)
    monkeypatch.setattr(task, "time_limit", 70)
    monkeypatch.setattr(task, "_exec_options", None)
    worker = start_worker("soft-limit", own_queue, TASK_SOFT_TIME_LIMIT="10", SANDBOX_STOP_TIMEOUT="60")
    try:
        started = time.monotonic()
        services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="stop")
        ended = wait_for(
            lambda: (s := Sandbox.objects.get(pk=sandbox.pk)).pending_action == "" and s, timeout=45, what="the stop to be ended"
        )
        took = time.monotonic() - started
        assert 9 < took < 30, took  # at the soft limit, not at Docker's 60 s
        assert ended.status == "error" and ended.heartbeat_at is None
        assert ended.status_detail == "stop took longer than its time limit (10 s) and was stopped.", ended.status_detail
        assert AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid, action="sandbox.stop.failed").exists()
        assert worker.proc.poll() is None  # the soft limit ends the task, not the worker
    finally:
        worker.stop()


def test_an_incident_step_past_its_soft_limit_ends_failed_and_says_so(make_sandbox, fake_engine, clean_workspace, admin_user):
    from incidents import services as incidents
    from incidents.models import Incident

    sandbox = make_sandbox("slowfreeze")
    fake_engine.pause = over_the_limit
    incident = incidents.incident_declare(actor=admin_user, sandbox=sandbox, severity="high", summary="seen")
    incidents.incident_step_perform(incident_id=incident.pk)
    incident.refresh_from_db()
    assert incident.state == Incident.State.FAILED
    assert incident.step_detail == "declare took longer than its task's time limit and was stopped."
    assert Sandbox.objects.get(pk=sandbox.pk).pending_action == ""  # released: the step can be run again
