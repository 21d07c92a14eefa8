"""The suite's clean-up: it removes the test instance's containers, volumes, images, pool
subvolumes and folders, and refuses (touching nothing) whatever is not the tests' own."""

import os
import subprocess
from pathlib import Path

from django.conf import settings

from sandboxes import engine

from .docker import docker_cli
from .paths import ROOT


class UnsafeCleanup(Exception):
    """The suite's clean-up was pointed at something that is not the tests' own."""


def remove_test_resources(
    *, instance: str, workspace_root: Path, mount_roots: list[Path], docker: bool = True, var_roots: tuple[Path, ...] = ()
) -> None:
    """Remove the test instance's containers, volumes, images, workspace and mount roots.

    Refuses (raising UnsafeCleanup, touching nothing) unless the instance label starts with
    "test", the workspace root lies under this project's var/, and each mount root is one of the
    tests' own under /srv: whatever the environment says, `make test` never removes a user's data."""
    var = (ROOT / "var").resolve()
    root = Path(workspace_root).resolve()
    if not instance.startswith("test"):
        raise UnsafeCleanup(f"instance {instance!r} is not a test instance")
    for folder in (root, *var_roots):
        folder = Path(folder).resolve()
        if folder == var or var not in folder.parents:
            raise UnsafeCleanup(f"{folder} is not inside {var}")
    for mount_root in mount_roots:
        if not (str(mount_root).startswith("/srv/ccpanel-test") and str(mount_root).endswith("-mounts")):
            raise UnsafeCleanup(f"mount root {mount_root} is not one of the tests' own")
    label = f"{engine.LABEL_INSTANCE}={instance}"
    if docker:
        ids = docker_cli("ps", "-aq", "--filter", f"label={label}").stdout.split()
        if ids:
            docker_cli("rm", "-f", *ids, check=False)
        vols = docker_cli("volume", "ls", "-q", "--filter", f"label={label}").stdout.split()
        if vols:
            docker_cli("volume", "rm", "-f", *vols, check=False)
        images = docker_cli("images", "-q", "--filter", f"label={label}").stdout.split()
        if images:
            docker_cli("rmi", "-f", *set(images), check=False)
    empty_pool(root)
    # The pool's mount point stays (the session's fixture unmounts it); what is in it goes.
    in_pool = [root / name for name in os.listdir(root)] if _is_pool(root) else [root]
    for path in [*in_pool, *mount_roots, *var_roots]:
        if Path(path).exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)
    _restore_pool_root(root)


def _is_pool(root: Path) -> bool:
    from storage import pool

    return pool.mounted_at(root) is not None


def _restore_pool_root(root: Path) -> None:
    """`rm` cannot remove the pool's mount point (nor the folders the pool keeps): put back
    what the panel expects there."""
    from storage import pool

    if _is_pool(root):
        pool.ensure()


def remove_own_test_resources(*, docker: bool = True) -> None:
    """Remove what the settings in force name as the tests' own (the suite's fixtures start and
    end with this)."""
    remove_test_resources(
        instance=settings.PANEL_INSTANCE,
        workspace_root=Path(settings.WORKSPACE_ROOT),
        mount_roots=[Path(r) for r in settings.SANDBOX_MOUNT_ROOTS],
        docker=docker,
        var_roots=(Path(settings.BACKUP_ROOT), Path(settings.EVIDENCE_ROOT)),
    )


def empty_pool(root: Path) -> None:
    """Delete every subvolume and snapshot in the tests' pool (deepest first: a subvolume made
    inside another must go before it), so that `rm` can take the rest."""
    if not str(root).startswith(str(ROOT / "var")):
        raise UnsafeCleanup(f"{root} is not inside {ROOT / 'var'}")
    found = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--mountpoint", str(root)], capture_output=True, text=True, check=False)
    if found.stdout.strip() != "btrfs":
        return
    qgroups = subprocess.run(["btrfs", "qgroup", "show", str(root)], capture_output=True, text=True, check=False).stdout
    for group in {word for word in qgroups.split() if word.startswith("1/")}:
        subprocess.run(
            ["btrfs", "qgroup", "limit", "none", group, str(root)], capture_output=True, check=False
        )  # a full group cannot be emptied
    listed = subprocess.run(["btrfs", "subvolume", "list", str(root)], capture_output=True, text=True, check=False).stdout
    paths = sorted((line.split(" path ", 1)[1] for line in listed.splitlines() if " path " in line), key=len, reverse=True)
    for path in paths:
        subprocess.run(["btrfs", "subvolume", "delete", str(root / path)], capture_output=True, check=False)
