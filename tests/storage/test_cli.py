"""`manage.py sandbox` on the storage pool, on the real engine: `create --disk-mb`, `disk`,
`checkpoint --label`, `checkpoints` (with sizes) and `rollback`, each through the same services
as the page, audited as cli:<user>."""

import os
import re
import subprocess

import pytest
from django.conf import settings
from django.core.management import CommandError

from audit.models import AuditEvent
from sandboxes.models import Sandbox
from storage import pool
from storage import services as storage
from storage.models import Checkpoint
from tests.sandboxes.test_cli import run
from tests.storage.test_pool import sh, tree_hashes

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
MB = 1024 * 1024


def qgroup_limit(group: str) -> int:
    """The group's limit as btrfs itself reports it (`btrfs qgroup show`), not the row."""
    out = subprocess.run(["btrfs", "qgroup", "show", "-re", "--raw", str(settings.WORKSPACE_ROOT)], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] == group:
            return int(fields[3])
    raise AssertionError(f"{group} is not in\n{out.stdout}{out.stderr}")


def test_the_cli_sets_the_quota_and_takes_lists_and_rolls_back_checkpoints(team, test_image, clean_docker):
    said = run("create", "clidisk", "--image", test_image, "--memory-mb", "256", "--cpus", "1", "--disk-mb", "150")
    assert "clidisk: running" in said
    sandbox = Sandbox.objects.get(name="clidisk")
    assert sandbox.in_pool and sandbox.disk_mb == 150
    assert qgroup_limit(sandbox.disk_group) == 150 * MB and pool.usage(sandbox.disk_group).limit == 150 * MB
    assert "Disk quota exceeded" in sh(sandbox, "dd if=/dev/zero of=/home/claude/big bs=1M count=200 2>&1").stdout
    sh(sandbox, "rm -f /home/claude/big; sync")

    assert "clidisk: disk quota 300 MB" in run("disk", "clidisk", "--disk-mb", "300")
    assert qgroup_limit(sandbox.disk_group) == 300 * MB and Sandbox.objects.get(pk=sandbox.pk).disk_mb == 300

    made = sh(
        sandbox,
        "mkdir -p /workspace/Projects/src && head -c 8388608 /dev/urandom > /workspace/Projects/src/blob && "
        "echo one > /workspace/Projects/src/a && echo cfg > /home/claude/.rc && sync",
    )
    assert made.returncode == 0, made
    before = tree_hashes(sandbox.workspace_path)
    said = run("checkpoint", "clidisk", "--label", "before the mess")
    checkpoint = Checkpoint.objects.get(sandbox=sandbox)
    assert f"clidisk: checkpoint {checkpoint.snapshot} taken" in said
    assert checkpoint.label == "before the mess" and checkpoint.created_by_name.startswith("cli:")
    assert pool.is_subvolume(storage.checkpoint_path(checkpoint))

    # The mess: the blob gone, a file changed, one added.
    sh(sandbox, "rm /workspace/Projects/src/blob && echo two > /workspace/Projects/src/a && echo new > /home/claude/new && sync")
    listing = run("checkpoints", "clidisk").splitlines()
    assert listing[0].split()[:4] == ["#", "CHECKPOINT", "TAKEN", "SIZE"]
    row = next(line for line in listing if checkpoint.snapshot in line)
    assert row.split()[0] == "1" and row.endswith(f"{checkpoint.created_by_name} before the mess"), row
    size = re.search(r" ([0-9.]+)MB ", row)
    assert size is not None, row
    # Its size is what it alone holds, as the file system counts it (what deleting it would
    # free): the 8 MB blob the live copy no longer has.
    assert 8.0 <= float(size.group(1)) < 9.0, row

    with pytest.raises(CommandError, match="has no checkpoint 'nope'"):
        run("rollback", "clidisk", "nope")
    old_container = Sandbox.objects.get(pk=sandbox.pk).container_id
    said = run("rollback", "clidisk", checkpoint.snapshot)
    assert f"clidisk: rolled back to {checkpoint.snapshot}" in said
    sandbox.refresh_from_db()
    assert sandbox.status == "running" and not sandbox.pending_action and sandbox.container_id != old_container
    assert tree_hashes(sandbox.workspace_path) == before  # files and home exactly as they were
    assert sh(sandbox, "cat /workspace/Projects/src/a /home/claude/.rc").stdout == "one\ncfg\n"
    assert sh(sandbox, "test -e /home/claude/new || echo gone").stdout == "gone\n"
    assert not os.path.exists(sandbox.workspace_path / "home" / "new")
    # The present was kept as a checkpoint, listed first (the newest) beside the one rolled back to.
    listing = run("checkpoints", "clidisk")
    assert f"before rollback to {checkpoint.snapshot}" in listing and "before the mess" in listing

    events = AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid)
    for action in ("sandbox.create", "sandbox.disk_quota_changed", "sandbox.checkpoint", "sandbox.rollback"):
        found = events.filter(action=action).first()
        assert found is not None and found.actor_name.startswith("cli:"), action
    assert events.get(action="sandbox.checkpoint").details["label"] == "before the mess"
    assert events.get(action="sandbox.rollback").details["checkpoint"] == checkpoint.snapshot
    assert events.get(action="sandbox.disk_quota_changed").details == {"from_mb": 150, "to_mb": 300}
