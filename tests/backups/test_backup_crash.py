"""A backup whose worker is SIGKILLed mid-write leaves no archive under its final name, and the
run that picks it up again completes it (and leaves no temporary file either)."""

import base64
import os
import time

import pytest

from backups import archive, services
from backups.models import Backup
from sandboxes import services as sandbox_services
from sandboxes.models import Sandbox
from sandboxes.tasks import reconcile_all_task
from tests.support.processes import kill_worker, start_worker
from tests.support.waiting import wait_for

ACTOR = sandbox_services.SystemActor("test")


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_a_backup_killed_mid_write_leaves_no_partial_archive_and_is_completed(make_sandbox, settings, own_queue):
    settings.SANDBOX_STALE_SECONDS = 3
    sandbox = make_sandbox("crashy")
    # Text that compresses (so it takes a while at level 9) but not to nothing: ~120 MB.
    chunk = base64.b64encode(os.urandom(3 * 1024 * 1024))
    for i in range(30):
        (sandbox.workspace_path / "Projects" / f"data-{i}.txt").write_bytes(chunk)
    first = start_worker("backup-a", own_queue, BACKUP_COMPRESSION_LEVEL="9")
    second = None
    try:
        backup = services.backup_request(actor=ACTOR, sandbox=sandbox)
        final = settings.BACKUP_ROOT / backup.file_name
        partial = archive.partial_path(str(final))
        wait_for(
            lambda: os.path.exists(partial) and os.path.getsize(partial) > 5 * 1024 * 1024,
            timeout=60,
            what="the archive to be half-written",
        )
        kill_worker(first)
        assert not final.exists()  # nothing under the final name
        backup.refresh_from_db()
        assert backup.status == Backup.Status.RUNNING
        # The sandbox was held only for its snapshot: the backup reads that, with its own heartbeat.
        assert Sandbox.objects.get(pk=sandbox.pk).pending_action == ""
        assert backup.heartbeat_at is not None and backup.attempts == 1

        time.sleep(4)  # the heartbeat stops: the backup goes stale
        second = start_worker("backup-b", own_queue, BACKUP_COMPRESSION_LEVEL="9")
        reconcile_all_task.apply()  # what beat runs: it queues the backup again
        done = wait_for(
            lambda: Backup.objects.filter(pk=backup.pk, status=Backup.Status.DONE).first(), timeout=180, what="the backup to be completed"
        )
        assert final.exists() and not os.path.exists(partial)
        assert sorted(os.listdir(settings.BACKUP_ROOT)) == [backup.file_name]
        checked = archive.verify(str(final))
        assert checked.ok and checked.sha256 == done.sha256
        wait_for(lambda: Backup.objects.filter(pk=backup.pk, attempts=0).exists(), what="its attempts to be counted afresh")
        assert Sandbox.objects.get(pk=sandbox.pk).pending_action == ""
        assert not any(p.name.startswith(str(sandbox.uuid)) for p in (settings.WORKSPACE_ROOT / ".snapshots").iterdir())
    finally:
        if first.proc.poll() is None:
            first.stop()
        if second is not None:
            second.stop()
