"""After a reboot the pool's loop file is no longer mounted: `make run` (`manage.py pool ensure`)
mounts it again, nosuid and nodev, with its data and quotas as they were. On a small pool of the
test's own (its own file and mount point), so that the suite's shared pool is never disturbed."""

import os
import subprocess
import sys

import pytest
from django.conf import settings

from storage import pool
from tests.support.paths import ROOT
from tests.support.processes import subprocess_env

pytestmark = pytest.mark.docker  # root, btrfs and loop devices: the integration tier


def ensure(point, image) -> str:
    """What `make run` runs (scripts/panel.sh: `manage.py pool ensure`), for this test's pool."""
    env = subprocess_env(
        WORKSPACE_ROOT=str(point),
        STORAGE_POOL="loop",
        STORAGE_POOL_FILE=str(image),
        STORAGE_POOL_SIZE_MB="256",
        PANEL_TEST_KEEP="WORKSPACE_ROOT,STORAGE_POOL,STORAGE_POOL_FILE,STORAGE_POOL_SIZE_MB",
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "pool", "ensure"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def limit_of(point, group: str) -> int:
    folder = pool._sysfs_of(pool.mounted_at(point).source, str(point))
    return int((folder / "qgroups" / group.replace("/", "_") / "max_referenced").read_text())


@pytest.mark.django_db
def test_make_run_mounts_the_pool_again_after_a_reboot():
    point = ROOT / "var" / f"{settings.PANEL_INSTANCE}-remount-workspaces"
    image = ROOT / "var" / f"{settings.PANEL_INSTANCE}-remount-pool.btrfs"
    for leftover in (point, image.parent / (image.name + ".new")):
        if pool.mounted_at(leftover) is not None:
            pool.unmount_at(leftover)
    image.unlink(missing_ok=True)
    point.mkdir(parents=True, exist_ok=True)
    try:
        said = ensure(point, image)
        assert "made a 256 MiB storage pool" in said and "mounted" in said, said
        mounted = pool.mounted_at(point)
        assert mounted is not None and mounted.fstype == "btrfs" and {"nosuid", "nodev"} <= mounted.options
        # A sandbox's subvolume with a file and its quota group, as a create leaves them.
        sub = point / "kept"
        pool.create_subvolume(sub)
        (sub / "Projects").mkdir()
        (sub / "Projects" / "notes").write_bytes(b"still here\n" * 1000)
        group = pool.ensure_group(sub, limit_mb=100, fs=point)
        assert limit_of(point, group) == 100 * 1024 * 1024
        os.sync()

        # The reboot: the mount and its loop device are gone; the file and the empty mount point stay.
        subprocess.run(["umount", str(point)], check=True)
        assert pool.mounted_at(point) is None and not any(point.iterdir()) and image.exists()
        loops = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True).stdout
        assert loops.strip() == "", loops

        said = ensure(point, image)
        assert "made" not in said and f"mounted {image} at {point}" in said, said
        mounted = pool.mounted_at(point)
        assert mounted is not None and mounted.fstype == "btrfs" and {"nosuid", "nodev"} <= mounted.options
        assert not any(o.startswith("discard") for o in mounted.fs_options), mounted.fs_options
        assert pool.quotas_on(point) and limit_of(point, group) == 100 * 1024 * 1024
        assert (sub / "Projects" / "notes").read_bytes() == b"still here\n" * 1000 and pool.is_subvolume(sub)
        assert point.stat().st_mode & 0o777 == 0o700
        # Run again with the pool mounted: only checked, nothing mounted twice.
        assert "is mounted at" in ensure(point, image)
        with open("/proc/self/mountinfo") as fh:
            assert sum(1 for line in fh if line.split()[4] == str(point)) == 1
    finally:
        if pool.mounted_at(point) is not None:
            subprocess.run(["umount", str(point)], check=False)
        image.unlink(missing_ok=True)
        if pool.mounted_at(point) is None and point.is_dir():
            point.rmdir()
