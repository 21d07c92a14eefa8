"""The storage pool on the real engine: every sandbox bounded by its quota, the host and the
panel unaffected, host users kept out, and checkpoints with rollback."""

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from django.conf import settings

from audit.models import AuditEvent
from sandboxes import services
from sandboxes.models import Sandbox
from storage import pool, selectors
from storage import services as storage
from storage.models import Checkpoint
from tests.support.docker import docker_cli, gvisor_or_skip

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
ACTOR = services.SystemActor("test")


def sh(sandbox: Sandbox, script: str, *, user: str = "") -> subprocess.CompletedProcess:
    return docker_cli("exec", *(["-u", user] if user else []), sandbox.container_id, "sh", "-c", script, check=False)


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> sha256), links by their target."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                found[rel] = "link:" + os.readlink(path)
            else:
                with open(path, "rb") as fh:
                    found[rel] = hashlib.file_digest(fh, "sha256").hexdigest()
    return found


def test_a_sandbox_stops_at_its_quota_and_nothing_else_notices(make_sandbox, clean_docker, client, admin_user):
    bounded = make_sandbox("quota", disk_mb=200)
    other = make_sandbox("neighbour", disk_mb=512)
    assert bounded.in_pool and other.in_pool
    assert selectors.disk_usage(bounded).limit == 200 * 1024 * 1024
    free_before = shutil.disk_usage(settings.STORAGE_POOL_FILE.parent).free
    pool_free_before = shutil.disk_usage(settings.WORKSPACE_ROOT).free

    for target in ("/workspace/Projects/fill", "/home/claude/fill"):
        done = sh(bounded, f"dd if=/dev/zero of={target} bs=1M count=300 2>&1; sync")
        assert "Disk quota exceeded" in done.stdout + done.stderr, done
        sh(bounded, f"rm -f {target}; sync")
    # Inside: both places refuse past the quota, and deleting frees it again.
    done = sh(bounded, "dd if=/dev/zero of=/workspace/Projects/small bs=1M count=20 2>&1 && sync && echo ok")
    assert done.stdout.strip().endswith("ok"), done

    # The host's disk: the pool's file was allocated up front, so nothing changed outside it, and
    # the pool lost no more than the quota.
    assert free_before - shutil.disk_usage(settings.STORAGE_POOL_FILE.parent).free < 50 * 1024 * 1024
    assert pool_free_before - shutil.disk_usage(settings.WORKSPACE_ROOT).free <= 200 * 1024 * 1024 + 64 * 1024 * 1024
    # The panel keeps serving, and the other sandbox keeps writing.
    client.force_login(admin_user)
    assert client.get("/").status_code == 200
    done = sh(other, "dd if=/dev/zero of=/workspace/Projects/more bs=1M count=250 2>&1 && sync && echo ok")
    assert done.stdout.strip().endswith("ok"), done
    usage = selectors.disk_usage(bounded)
    assert usage is not None and usage.used <= usage.limit
    # Still allocated whole after the deletes (no discard punched holes in it).
    image = os.stat(settings.STORAGE_POOL_FILE)
    assert image.st_blocks * 512 >= image.st_size


def test_a_subvolume_made_inside_a_sandbox_stays_within_its_quota(make_sandbox, clean_docker):
    """btrfs lets the owner of a folder make a subvolume there, without any capability: with
    simple quotas it joins the sandbox's group instead of escaping it."""
    if pool.quota_mode() != "squota":
        pytest.skip(
            "full qgroups: a nested subvolume would escape; the seccomp profile keeps sandboxes from making one"
        )  # never on this kernel
    sandbox = make_sandbox("nested", disk_mb=100)
    nested = sandbox.workspace_path / "Projects" / "sub"
    subprocess.run(["btrfs", "subvolume", "create", str(nested)], check=True, capture_output=True)
    os.chown(nested, 1000, 1000)
    done = sh(sandbox, "dd if=/dev/zero of=/workspace/Projects/sub/f bs=1M count=300 2>&1")
    assert "Disk quota exceeded" in done.stdout, done


def test_host_users_cannot_enter_the_pool_nor_run_a_setuid_file_from_it(make_sandbox, clean_docker):
    sandbox = make_sandbox("suid")
    sh(sandbox, "cp /bin/busybox /workspace/Projects/id && chmod 4755 /workspace/Projects/id")
    made = sandbox.workspace_path / "Projects" / "id"
    assert made.stat().st_mode & 0o4000 and made.stat().st_uid == 1000
    assert "nosuid" in pool.mounted_at(settings.WORKSPACE_ROOT).options
    assert "nodev" in pool.mounted_at(settings.WORKSPACE_ROOT).options

    # Another host user cannot list the sandboxes' folders at all.
    listed = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "ls", str(sandbox.workspace_path)], capture_output=True, text=True
    )
    assert listed.returncode != 0 and "Permission denied" in listed.stderr
    assert Path(settings.WORKSPACE_ROOT).stat().st_mode & 0o777 == 0o700

    # Even let through, the bit does nothing: the file runs as the user who runs it, not uid 1000.
    os.chmod(settings.WORKSPACE_ROOT, 0o755)
    try:
        ran = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(made), "-u"], capture_output=True, text=True
        )
    finally:
        os.chmod(settings.WORKSPACE_ROOT, 0o700)
    assert ran.stdout.strip() == "65534", ran


def test_checkpoint_of_a_running_sandbox_then_rollback_restores_every_file(make_sandbox, clean_docker):
    sandbox = make_sandbox("cp")
    sh(
        sandbox,
        "mkdir -p /workspace/Projects/src /home/claude/.cfg && echo a > /home/claude/.cfg/x && "
        "for i in $(seq 1 200); do echo $i > /workspace/Projects/src/f$i; done",
    )
    # A writer keeps changing files while the checkpoint is taken.
    docker_cli(
        "exec",
        "-d",
        sandbox.container_id,
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /workspace/Projects/src/f$((i % 200 + 1)); echo $i >> /home/claude/log; done",
    )
    time.sleep(0.3)
    checkpoint = storage.checkpoint_create(actor=ACTOR, sandbox=sandbox, label="before the change")
    snap = storage.checkpoint_path(checkpoint)
    assert snap.is_dir() and pool.is_subvolume(snap)
    assert subprocess.run(["btrfs", "property", "get", str(snap), "ro"], capture_output=True, text=True).stdout.strip() == "ro=true"
    frozen = tree_hashes(snap)
    assert "Projects/src/f1" in frozen and "home/log" in frozen
    assert Sandbox.objects.get(pk=sandbox.pk).pending_action == ""
    time.sleep(0.3)
    sh(sandbox, "rm -rf /workspace/Projects/src; echo changed > /workspace/Documentation/new")
    old_container = sandbox.container_id

    before = storage.rollback(actor=ACTOR, sandbox=sandbox, checkpoint=checkpoint)
    sandbox.refresh_from_db()
    assert sandbox.status == "running" and not sandbox.pending_action
    assert sandbox.container_id != old_container  # recreated
    # Files and home exactly as they were at the checkpoint.
    assert tree_hashes(sandbox.workspace_path) == frozen
    assert sh(sandbox, "cat /workspace/Projects/src/f7 && ls /workspace/Documentation").stdout.split() == [
        (snap / "Projects/src/f7").read_text().strip()
    ]
    # The container is the sandbox's own spec: hardened, its folders the ones recorded again.
    data = json.loads(docker_cli("inspect", sandbox.container_id).stdout)[0]
    assert data["HostConfig"]["CapDrop"] == ["ALL"] and data["HostConfig"]["ReadonlyRootfs"] is True
    assert data["HostConfig"]["Memory"] == sandbox.memory_mb * 1024 * 1024
    assert sandbox.host_path_ids[str(sandbox.workspace_path / "Projects")][-1][0] == os.stat(sandbox.workspace_path / "Projects").st_dev
    # The present was kept as a checkpoint, and both steps are in the audit trail.
    assert before.automatic and "Documentation/new" in tree_hashes(storage.checkpoint_path(before))
    actions = list(AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid).values_list("action", flat=True))
    assert "sandbox.checkpoint" in actions and "sandbox.rollback" in actions
    assert [c.label for c in Checkpoint.objects.filter(sandbox=sandbox)] == [before.label, "before the change"]

    # Destroy removes the checkpoints and the group with the sandbox.
    services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="destroy", enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="destroy")
    assert not sandbox.workspace_path.exists() and not snap.exists()
    assert not Checkpoint.objects.filter(sandbox=sandbox).exists()


def test_checkpoints_are_rotated_and_a_stopped_sandbox_rolls_back_stopped(make_sandbox, clean_docker, settings):
    settings.SANDBOX_KEEP_CHECKPOINTS = 2
    sandbox = make_sandbox("rot")
    services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="stop", enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="stop")
    sandbox.refresh_from_db()
    first = storage.checkpoint_create(actor=ACTOR, sandbox=sandbox, label="one")
    (sandbox.workspace_path / "Projects" / "two").write_text("2")
    storage.checkpoint_create(actor=ACTOR, sandbox=sandbox, label="two")
    storage.checkpoint_create(actor=ACTOR, sandbox=sandbox, label="three")
    assert [c.label for c in Checkpoint.objects.filter(sandbox=sandbox)] == ["three", "two"]
    assert not storage.checkpoint_path(first).exists()
    two = Checkpoint.objects.get(sandbox=sandbox, label="two")
    (sandbox.workspace_path / "Projects" / "two").unlink()
    storage.rollback(actor=ACTOR, sandbox=sandbox, checkpoint=two)
    sandbox.refresh_from_db()
    assert sandbox.status == "stopped" and (sandbox.workspace_path / "Projects" / "two").read_text() == "2"
    services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="start", enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    sandbox.refresh_from_db()
    assert sandbox.status == "running", sandbox.status_detail
    assert sh(sandbox, "cat /workspace/Projects/two").stdout == "2"


def test_the_quota_changes_while_it_runs(make_sandbox, clean_docker):
    sandbox = make_sandbox("grow", disk_mb=100)
    assert "Disk quota exceeded" in sh(sandbox, "dd if=/dev/zero of=/home/claude/f bs=1M count=150 2>&1").stdout
    storage.set_disk_quota(actor=ACTOR, sandbox=sandbox, disk_mb=400)
    assert sh(sandbox, "rm /home/claude/f; dd if=/dev/zero of=/home/claude/f bs=1M count=150 2>&1 && echo ok").stdout.strip().endswith("ok")
    assert Sandbox.objects.get(pk=sandbox.pk).disk_mb == 400
    with pytest.raises(storage.StorageError):
        storage.set_disk_quota(actor=ACTOR, sandbox=sandbox, disk_mb=1)
    # The quotas together may not overcommit the pool: nothing within its quota can fill it.
    with pytest.raises(storage.StorageError, match="overcommit"):
        storage.set_disk_quota(actor=ACTOR, sandbox=sandbox, disk_mb=settings.STORAGE_POOL_SIZE_MB)
    with pytest.raises(services.InvalidInput, match="overcommit"):
        make_sandbox("greedy", disk_mb=settings.STORAGE_POOL_SIZE_MB - 300)
    assert not Sandbox.objects.filter(name="greedy").exists()
    sandbox.refresh_from_db()
    # A sandbox full to its quota can still be checkpointed, and destroyed with its checkpoints.
    assert "Disk quota exceeded" in sh(sandbox, "dd if=/dev/zero of=/home/claude/g bs=1M count=400 2>&1").stdout
    full = storage.checkpoint_create(actor=ACTOR, sandbox=sandbox, label="full")
    assert pool.usage(sandbox.disk_group).limit == 400 * 1024 * 1024  # the limit is back after the step
    services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="destroy", enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="destroy")
    sandbox.refresh_from_db()
    assert sandbox.status == "destroyed" and not sandbox.status_detail, sandbox.status_detail
    assert not sandbox.workspace_path.exists() and not storage.checkpoint_path(full).exists()


def test_a_sandbox_with_plain_folders_moves_into_the_pool_intact(make_sandbox, clean_docker, settings):
    from django.core.management import call_command

    from storage import migrate

    settings.STORAGE_POOL = "none"
    old = make_sandbox("old")
    assert not old.in_pool and not pool.is_subvolume(old.workspace_path)
    sh(old, "mkdir -p /workspace/Projects/src && echo code > /workspace/Projects/src/a.py && ln -s a.py /workspace/Projects/src/l")
    sh(old, "echo conf > /home/claude/.rc")
    (old.workspace_path / "Research" / "sparse").write_bytes(b"")
    os.truncate(old.workspace_path / "Research" / "sparse", 1 << 30)
    before = migrate.tree_digest(str(old.workspace_path))
    with pytest.raises(migrate.MigrateError, match="no pool"):
        migrate.migrate(say=lambda _: None)
    settings.STORAGE_POOL = "loop"
    with pytest.raises(migrate.MigrateError, match="Stop these sandboxes first"):
        migrate.migrate(say=lambda _: None)
    services.sandbox_request_action(actor=ACTOR, sandbox=old, action="stop", enqueue=False)
    services.sandbox_perform(sandbox_id=old.pk, action="stop")
    uuid, volume = old.uuid, old.volume_name

    call_command("pool", "migrate")
    old.refresh_from_db()
    assert old.in_pool and pool.is_subvolume(old.workspace_path) and old.uuid == uuid and old.volume_name == volume
    after = migrate.tree_digest(str(old.workspace_path))
    assert {k: v for k, v in after.items() if not k.startswith("home")} == before
    assert (old.workspace_path / "Research" / "sparse").stat().st_blocks == 0  # still sparse
    assert AuditEvent.objects.filter(action="sandbox.moved_into_pool", sandbox_uuid=uuid).exists()
    assert not list(settings.WORKSPACE_ROOT.glob(".before-pool-*")) and not list(settings.WORKSPACE_ROOT.glob(".migrating-*"))

    services.sandbox_request_action(actor=ACTOR, sandbox=old, action="start", enqueue=False)
    services.sandbox_perform(sandbox_id=old.pk, action="start")
    old.refresh_from_db()
    assert old.status == "running", old.status_detail
    assert sh(old, "cat /home/claude/.rc /workspace/Projects/src/l").stdout == "conf\ncode\n"
    assert "Disk quota exceeded" in sh(old, f"dd if=/dev/zero of=/home/claude/big bs=1M count={old.disk_mb + 50} 2>&1").stdout


SUBVOL_SCRIPT = """
import errno, fcntl, os, struct, termios
fd = os.open("/workspace/Projects", os.O_RDONLY)
args = bytearray(struct.pack("q", 0) + b"escape".ljust(4088, b"\\0"))
for name, request in (("subvolume", 0x5000940E), ("snapshot-v2", 0x50009417)):
    try:
        fcntl.ioctl(fd, request, args if name == "subvolume" else bytearray(4096))
        print(name, "made")
    except OSError as exc:
        print(name, errno.errorcode[exc.errno])
try:
    fcntl.ioctl(os.open("/dev/null", os.O_RDONLY), termios.TCGETS, bytearray(64))
except OSError as exc:
    print("tcgets", errno.errorcode[exc.errno])
"""


def test_nothing_inside_a_sandbox_can_make_a_subvolume(make_sandbox, clean_docker):
    """The btrfs ioctls are refused by the sandbox's seccomp profile (a subvolume made inside
    would escape the quota and the backups); other ioctls still reach the kernel."""
    sandbox = make_sandbox("noioctl", image="ccpanel/claude-code:latest")
    done = docker_cli("exec", sandbox.container_id, "python3", "-c", SUBVOL_SCRIPT, check=False)
    assert done.stdout.split("\n")[:3] == ["subvolume EPERM", "snapshot-v2 EPERM", "tcgets ENOTTY"], done
    assert not (sandbox.workspace_path / "Projects" / "escape").exists()
    data = json.loads(docker_cli("inspect", sandbox.container_id).stdout)[0]
    assert any(o.startswith("seccomp=") and "ioctl" in o for o in data["HostConfig"]["SecurityOpt"])


def test_nothing_inside_a_gvisor_sandbox_can_make_a_subvolume_either(make_sandbox, clean_docker):
    """Under gVisor the seccomp profile is not what refuses them: runsc loads a container's
    seccomp profile only with --oci-seccomp, which the panel does not set. gVisor's own kernel
    answers the sandbox's system calls and passes no btrfs ioctl to the host's."""
    gvisor_or_skip()
    sandbox = make_sandbox("noioctl-gvisor", image="ccpanel/claude-code:latest", runtime="runsc")
    done = docker_cli("exec", sandbox.container_id, "python3", "-c", SUBVOL_SCRIPT, check=False)
    assert done.stdout.split("\n")[:2] == ["subvolume ENOTTY", "snapshot-v2 ENOTTY"], done
    assert not (sandbox.workspace_path / "Projects" / "escape").exists()
    assert json.loads(docker_cli("inspect", sandbox.container_id).stdout)[0]["HostConfig"]["Runtime"] == "runsc"


def test_the_pool_grows_with_one_command_while_sandboxes_run(make_sandbox, clean_docker):
    from django.core.management import call_command

    sandbox = make_sandbox("grower")
    before = shutil.disk_usage(settings.WORKSPACE_ROOT).total
    call_command("pool", "grow", "--size-mb", str(settings.STORAGE_POOL_SIZE_MB + 512))
    after = shutil.disk_usage(settings.WORKSPACE_ROOT).total
    assert after - before >= 500 * 1024 * 1024
    image = os.stat(settings.STORAGE_POOL_FILE)
    assert image.st_size == (settings.STORAGE_POOL_SIZE_MB + 512) * 1024 * 1024 and image.st_blocks * 512 >= image.st_size
    assert sh(sandbox, "echo still > /workspace/Projects/x && cat /workspace/Projects/x").stdout == "still\n"
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="larger size"):
        call_command("pool", "grow", "--size-mb", "100")
