"""Backups of sandboxes in the storage pool read a snapshot: one instant of a running sandbox,
sparse files archived sparsely, and the sandbox free for every other action while it is read."""

import json
import os
import subprocess
import tarfile
import threading
import time

import pytest
from django.conf import settings
from django.db import connection

from backups import archive
from backups import services as backups
from backups.models import Backup
from incidents import services as incidents
from sandboxes import services
from sandboxes.models import Sandbox
from storage import services as storage
from tests.storage.test_pool import ACTOR, sh, tree_hashes
from tests.support.docker import docker_cli
from tests.support.processes import start_worker
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
LOOP = (
    # Two counters written in order (A, then B, each replaced whole) and a folder renamed back and forth: at any one
    # instant A >= B and exactly one of d1, d2 exists. A backup that read the live folders could
    # see B ahead of A, or both folders, or neither.
    "cd /workspace/Projects && mkdir -p d1 && i=0; while true; do i=$((i+1)); echo $i > a.t; mv a.t A; echo $i > b.t; mv b.t B; "
    "if [ -d d1 ]; then mv d1 d2; else mv d2 d1; fi; "
    "echo $i > /home/claude/C; done"
)


def entries(path: str) -> dict[str, dict]:
    with tarfile.open(path, "r:gz") as tar:
        member = tar.getmember(archive.MANIFEST)
        data = json.load(tar.extractfile(member))
    return {e["path"]: e for e in data["files"]}


def test_a_backup_of_a_running_sandbox_is_one_instant(make_sandbox, clean_docker):
    sandbox = make_sandbox("moving")
    for n in range(50):
        (sandbox.workspace_path / "Projects" / f"f{n}").write_text("x" * n)
    docker_cli("exec", "-d", sandbox.container_id, "sh", "-c", LOOP)
    time.sleep(0.5)

    # The archive written from a snapshot holds exactly what the snapshot holds.
    backup = backups.backup_request(actor=ACTOR, sandbox=sandbox, enqueue=False)
    snap = settings.WORKSPACE_ROOT / ".snapshots" / f"{sandbox.uuid}-test"
    storage.snapshot_now(sandbox, snap)
    try:
        backups.write_backup(sandbox, backup, snapshot=snap)
        expected = {}
        for rel, digest in tree_hashes(snap).items():
            area, _, rest = rel.partition("/")
            expected[f"workspace/{rel}" if area != "home" else rel] = digest
        listed = {p: e["sha256"] for p, e in entries(str(backup.path)).items() if e["type"] == "file"}
        assert listed == {p: d for p, d in expected.items() if p != "workspace/.ccpanel-sandbox"}  # the marker is the panel's
    finally:
        storage.pool.delete(snap)
    services.claims.finish(sandbox, "backup", None, "", outcome="done", audited=False)

    # And through the service, as the button does it: consistent, listed by tar as usual.
    for _ in range(3):
        backup = backups.backup_request(actor=ACTOR, sandbox=sandbox, enqueue=False)
        backups.backup_perform(backup_id=backup.pk)
        backup.refresh_from_db()
        assert backup.status == Backup.Status.DONE, backup.detail
        with tarfile.open(backup.path, "r:gz") as tar:
            a = int(tar.extractfile("workspace/Projects/A").read())
            b = int(tar.extractfile("workspace/Projects/B").read())
            names = tar.getnames()
        assert a in (b, b + 1), (a, b)
        assert ("workspace/Projects/d1" in names) != ("workspace/Projects/d2" in names)
        listing = subprocess.run(["tar", "tzvf", str(backup.path)], capture_output=True, text=True, check=True).stdout
        assert "workspace/Projects/f49" in listing and "home/C" in listing
        assert backups.backup_verify(backup=backup).verified_ok
    assert not any(p.name.startswith(str(sandbox.uuid)) for p in (settings.WORKSPACE_ROOT / ".snapshots").iterdir())


def test_a_16_tb_sparse_file_is_backed_up_in_seconds_and_restored_sparse(make_sandbox, clean_docker):
    sandbox = make_sandbox("sparse", disk_mb=512)
    made = sh(
        sandbox,
        "truncate -s 17592186044416 /workspace/Projects/huge && echo head | dd of=/workspace/Projects/huge conv=notrunc 2>/dev/null && "
        "printf tail | dd of=/workspace/Projects/huge bs=1 seek=17592186040000 conv=notrunc 2>/dev/null",
    )
    assert made.returncode == 0, made
    started = time.monotonic()
    backup = backups.backup_request(actor=ACTOR, sandbox=sandbox, enqueue=False)
    backups.backup_perform(backup_id=backup.pk)
    backup.refresh_from_db()
    took = time.monotonic() - started
    assert backup.status == Backup.Status.DONE, backup.detail
    assert took < 10 and backup.size_bytes < 10 * 1024 * 1024, (took, backup.size_bytes)

    restore = backups.restore_request(actor=ACTOR, backup=backup, sandbox=sandbox, enqueue=False)
    (sandbox.workspace_path / "Projects" / "huge").unlink()
    backups.restore_perform(restore_id=restore.pk)
    restore.refresh_from_db()
    assert restore.status == "done", restore.detail
    huge = sandbox.workspace_path / "Projects" / "huge"
    st = huge.stat()
    assert st.st_size == 16 * 1024**4 and st.st_blocks * 512 < 1024 * 1024
    with open(huge, "rb") as fh:
        assert fh.read(5) == b"head\n"
        fh.seek(17592186040000)
        assert fh.read(4) == b"tail"


def test_while_a_slow_backup_runs_every_control_still_works(make_sandbox, clean_docker, celery_worker, settings):
    """The backup holds the sandbox only for its snapshot: Stop, Pause, an incident's freeze and
    Destroy act at once, and another sandbox starts on the lifecycle workers meanwhile."""
    from controlpanel.celery import app

    sandbox = make_sandbox("busy")
    for n in range(400):
        (sandbox.workspace_path / "Projects" / f"blob{n}").write_bytes(os.urandom(256 * 1024))
    queue = "ccpanel-test-slow-jobs"
    before = app.conf.task_routes
    app.conf.task_routes = [{"backups.tasks.backup_task": {"queue": queue}}, *before]  # the first router that answers wins
    app.amqp.flush_routes()
    app.amqp.__dict__.pop("router", None)
    worker = start_worker("slow-jobs", queue, BACKUP_MAX_MBPS="2")  # about 50 s for 100 MB
    try:
        backup = backups.backup_request(actor=ACTOR, sandbox=sandbox)
        wait_for(lambda: Backup.objects.filter(pk=backup.pk, heartbeat_at__isnull=False).exists(), timeout=30, what="the backup to read")
        assert Sandbox.objects.get(pk=sandbox.pk).pending_action == ""

        def act(target: Sandbox, action: str, *, status: str) -> float:
            t0 = time.monotonic()
            services.sandbox_request_action(actor=ACTOR, sandbox=target, action=action)
            wait_for(lambda: Sandbox.objects.filter(pk=target.pk, status=status, pending_action="").exists(), timeout=15, what=f"{action}")
            return time.monotonic() - t0

        assert act(sandbox, "pause", status="paused") < 5
        assert act(sandbox, "unpause", status="running") < 5
        assert act(sandbox, "stop", status="stopped") < 8
        other = services.sandbox_create(
            actor=ACTOR, team=sandbox.team, name="other", image=sandbox.image, memory_mb=256, cpus=1, network_mode="none"
        )
        started = time.monotonic()
        wait_for(lambda: Sandbox.objects.filter(pk=other.pk, status="running").exists(), timeout=15, what="the other sandbox")
        assert time.monotonic() - started < 5
        assert act(sandbox, "start", status="running") < 8
        incident = incidents.incident_declare(actor=ACTOR, sandbox=Sandbox.objects.get(pk=sandbox.pk), severity="high", summary="odd")
        wait_for(lambda: Sandbox.objects.filter(pk=sandbox.pk, status="paused", pending_action="").exists(), timeout=10, what="the freeze")
        incidents.incident_close(actor=ACTOR, incident=incident, notes="checked", resolution="false alarm")
        assert Backup.objects.get(pk=backup.pk).status == Backup.Status.RUNNING  # still reading all along
        services.sandbox_request_action(actor=ACTOR, sandbox=Sandbox.objects.get(pk=sandbox.pk), action="destroy")
        wait_for(lambda: Sandbox.objects.filter(pk=sandbox.pk, status="destroyed").exists(), timeout=15, what="destroy")
        wait_for(lambda: Backup.objects.filter(pk=backup.pk, status=Backup.Status.FAILED).exists(), timeout=15, what="the backup to end")
        ended = Backup.objects.get(pk=backup.pk)
        assert "ancel" in ended.detail, ended.detail
        assert not archive_partial_exists(ended)
        backups.backup_delete(actor=ACTOR, backup=ended)
    finally:
        worker.stop()
        app.conf.task_routes = before
        app.amqp.flush_routes()
        app.amqp.__dict__.pop("router", None)
        connection.close()


def archive_partial_exists(backup: Backup) -> bool:
    return os.path.exists(archive.partial_path(str(backup.path)))


def test_a_backup_can_be_cancelled_and_is_capped(make_sandbox, clean_docker, settings):
    sandbox = make_sandbox("capped")
    for n in range(20):
        (sandbox.workspace_path / "Projects" / f"b{n}").write_bytes(os.urandom(1024 * 1024))
    settings.BACKUP_MAX_BYTES = 5 * 1024 * 1024
    backup = backups.backup_request(actor=ACTOR, sandbox=sandbox, enqueue=False)
    backups.backup_perform(backup_id=backup.pk)
    backup.refresh_from_db()
    assert backup.status == Backup.Status.FAILED and "BACKUP_MAX_BYTES" in backup.detail, backup.detail
    assert not backup.path.exists() and not archive_partial_exists(backup)

    settings.BACKUP_MAX_BYTES = 1024**4
    settings.BACKUP_MAX_MBPS = 4
    # One large file: the cancel holds within a file, not only between files.
    (sandbox.workspace_path / "Projects" / "one-large").write_bytes(os.urandom(64 * 1024 * 1024))
    backup = backups.backup_request(actor=ACTOR, sandbox=sandbox, enqueue=False)
    runner = threading.Thread(target=lambda: (backups.backup_perform(backup_id=backup.pk), connection.close()))
    runner.start()
    wait_for(lambda: Backup.objects.filter(pk=backup.pk, heartbeat_at__isnull=False).exists(), timeout=20, what="reading")
    wait_for(lambda: Backup.objects.get(pk=backup.pk).progress_bytes > 24 * 1024 * 1024, timeout=30, what="the large file half-read")
    backups.backup_cancel(actor=ACTOR, backup=Backup.objects.get(pk=backup.pk))
    cancelled_at = time.monotonic()
    runner.join(20)
    assert time.monotonic() - cancelled_at < 3
    backup.refresh_from_db()
    assert backup.status == Backup.Status.FAILED and backup.detail.startswith("Cancelled"), backup.detail
    assert not archive_partial_exists(backup)
    # A backup whose worker is gone is ended by Cancel itself, then deleted.
    stuck = backups.backup_request(actor=ACTOR, sandbox=sandbox, enqueue=False)
    backups.backup_cancel(actor=ACTOR, backup=stuck)
    stuck.refresh_from_db()
    assert stuck.status == Backup.Status.FAILED and Sandbox.objects.get(pk=sandbox.pk).pending_action == ""
    backups.backup_delete(actor=ACTOR, backup=stuck)
