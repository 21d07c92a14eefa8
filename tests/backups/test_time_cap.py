"""Every backup has a time cap: one throttled so that it outlasts BACKUP_MAX_SECONDS ends failed,
the reason naming the setting, no partial file left, and the sandbox free afterwards. On the real
engine, for a sandbox in the storage pool (read from a snapshot) and one with plain folders (read
under its claim)."""

import os
import time

import pytest

from audit.models import AuditEvent
from backups import archive
from backups import services as backups
from backups.models import Backup
from sandboxes import services
from sandboxes.models import Sandbox
from storage import pool

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
ACTOR = services.SystemActor("test")


@pytest.mark.parametrize("in_pool", [True, False], ids=["pool", "plain-folders"])
def test_a_backup_past_backup_max_seconds_ends_failed_with_no_partial_file(in_pool, make_sandbox, clean_docker, settings):
    if not in_pool:
        settings.STORAGE_POOL = "none"
    sandbox = make_sandbox("slowcap")
    assert sandbox.in_pool == in_pool
    for n in range(6):
        (sandbox.workspace_path / "Projects" / f"blob{n}").write_bytes(os.urandom(5 * 1024 * 1024))
    settings.BACKUP_MAX_MBPS = 4  # 30 MB: about 8 s unthrottled by the cap
    settings.BACKUP_MAX_SECONDS = 2

    backup = backups.backup_request(actor=ACTOR, sandbox=sandbox, enqueue=False)
    started = time.monotonic()
    backups.backup_perform(backup_id=backup.pk)
    took = time.monotonic() - started
    backup.refresh_from_db()

    assert backup.status == Backup.Status.FAILED, backup.detail
    assert backup.detail == "Stopped: it ran longer than BACKUP_MAX_SECONDS (2 s) and was stopped.", backup.detail
    assert 2 <= took < 6, took  # stopped at the cap, not at the end of the data
    assert 0 < backup.progress_bytes < 30 * 1024 * 1024
    assert not backup.path.exists() and not os.path.exists(archive.partial_path(str(backup.path)))
    assert list(settings.BACKUP_ROOT.glob(f"{backup.file_name}*")) == []
    after = Sandbox.objects.get(pk=sandbox.pk)
    assert after.pending_action == "" and after.status == "running", (after.pending_action, after.status_detail)
    if in_pool:  # its snapshot went with it
        assert not any(p.name.startswith(str(sandbox.uuid)) for p in (settings.WORKSPACE_ROOT / pool.SNAPSHOTS).iterdir())
    failed = AuditEvent.objects.get(sandbox_uuid=sandbox.uuid, action="backup.failed")
    assert "BACKUP_MAX_SECONDS" in failed.details["detail"]

    # Free: the next action and the next backup (uncapped now) go through.
    settings.BACKUP_MAX_SECONDS, settings.BACKUP_MAX_MBPS = 3600, 0
    again = backups.backup_request(actor=ACTOR, sandbox=after, enqueue=False)
    backups.backup_perform(backup_id=again.pk)
    again.refresh_from_db()
    assert again.status == Backup.Status.DONE, again.detail
    backups.backup_delete(actor=ACTOR, backup=backup)
