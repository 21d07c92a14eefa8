"""The storage pool: the ONLY code that runs `btrfs`, `mkfs.btrfs`, `mount` and `losetup`.

    WORKSPACE_ROOT                      the pool, mounted nosuid,nodev; root's, 0700
        <name>/                         one subvolume per sandbox (its six folders and home/),
                                        in a level-1 quota group 1/<id> that carries its limit
        .checkpoints/<uuid>/<id>        read-only snapshots of it (checkpoints), in the same group
        .snapshots/<uuid>-<what>        short-lived read-only snapshots (backups, evidence)

A sandbox's quota group is 1/<the subvolume id of its first subvolume>: btrfs never reuses a
subvolume id, so the group is the sandbox's alone, and every subvolume made from it (a rollback's
new live copy, a checkpoint) joins the same group when it is made (`-i`), which keeps the
accounting exact without a rescan. The limit is on what the group references, so a checkpoint
costs what it holds that the live copy no longer does: the file system's own count.

Paths, not file descriptors, are handed to the btrfs tool. That is safe here because every
path this module is given lies in folders only root can write: the pool's root (0700), a
sandbox's subvolume root (root's, 0755) and the snapshot folders. Nothing a sandbox can write is
ever on the way.
"""

import fcntl
import logging
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)
CHECKPOINTS = ".checkpoints"
SNAPSHOTS = ".snapshots"
_TIMEOUT = 120


class PoolError(Exception):
    """A pool operation that failed; the message says what and why."""


def _run(*args: str, timeout: float = _TIMEOUT) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise PoolError(f"{args[0]} is not installed (Debian: apt-get install btrfs-progs).") from None
    except subprocess.TimeoutExpired:
        raise PoolError(f"{' '.join(args[:3])} did not finish within {timeout:.0f} s.") from None
    if done.returncode != 0:
        raise PoolError(f"{' '.join(args[:3])} failed: {(done.stderr or done.stdout).strip()[:500]}")
    return done.stdout


# --- the pool itself -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mounted:
    point: str
    fstype: str
    source: str
    options: frozenset[str]  # the mount's own (nosuid, nodev, ...)
    fs_options: frozenset[str] = frozenset()  # the file system's (discard=async, ...)


def mounted_at(path: str | Path) -> Mounted | None:
    """The file system mounted exactly at `path` (the last one, if several are stacked)."""
    point = os.path.realpath(path)
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 6 or fields[4].replace("\\040", " ") != point:
                    continue
                fstype, source, superopts, *_ = right.split() + ["", "", ""]
                found = Mounted(point, fstype, source, frozenset(fields[5].split(",")), frozenset(superopts.split(",")))
    except OSError:
        return None
    return found


def kernel_has_btrfs() -> bool:
    """Whether this kernel can mount btrfs (loading its module if it must)."""

    def listed() -> bool:
        try:
            with open("/proc/filesystems", encoding="utf-8") as fh:
                return any(line.split()[-1] == "btrfs" for line in fh if line.strip())
        except OSError:
            return False

    if listed():
        return True
    subprocess.run(["modprobe", "btrfs"], capture_output=True, check=False, timeout=30)
    return listed()


def enabled() -> bool:
    """Whether this panel keeps new sandboxes in a pool: STORAGE_POOL is not "none" and the
    kernel has btrfs (where it has not, sandboxes keep plain folders, without a disk quota)."""
    return settings.STORAGE_POOL != "none" and kernel_has_btrfs()


def active() -> bool:
    """Whether the pool is in use now: wanted, and a btrfs file system is mounted at
    WORKSPACE_ROOT. (Where it is not, sandboxes keep plain folders, without a disk quota.)"""
    if not enabled():
        return False
    found = mounted_at(settings.WORKSPACE_ROOT)
    return found is not None and found.fstype == "btrfs"


def status() -> dict:
    """What the pool is, for the pages and `manage.py pool status`: mounted or not, its size and
    free space (bytes), and where it comes from."""
    root = str(settings.WORKSPACE_ROOT)
    found = mounted_at(root)
    info = {"wanted": enabled(), "mounted": bool(found and found.fstype == "btrfs"), "root": root, "kind": settings.STORAGE_POOL}
    if settings.STORAGE_POOL == "loop":
        info["file"] = str(settings.STORAGE_POOL_FILE)
    if info["mounted"]:
        st = os.statvfs(root)
        info["size"] = st.f_blocks * st.f_frsize
        info["free"] = st.f_bavail * st.f_frsize
        info["options"] = sorted(found.options & {"nosuid", "nodev"}) if found else []
    return info


def default_size_mb(folder: Path) -> int:
    """Half of the free space where the loop file goes, at least 2 GiB, leaving 5 GiB free."""
    free_mb = shutil.disk_usage(folder).free // (1024 * 1024)
    size = max(free_mb // 2, 2048)
    if free_mb - size < 5 * 1024:
        raise PoolError(
            f"Only {free_mb} MiB are free in {folder}: too little for a storage pool (it needs 2 GiB and leaves 5 GiB). "
            "Free some space, set STORAGE_POOL_SIZE_MB, or STORAGE_POOL=none for plain folders without a disk quota."
        )
    return size


def ensure() -> str:
    """Make, mount and check the pool as the settings say (make run, and the test suite); say
    what was done. Idempotent: a mounted pool is only checked (quotas on, nosuid and nodev)."""
    root = Path(settings.WORKSPACE_ROOT)
    if settings.STORAGE_POOL == "none":
        return "STORAGE_POOL=none: sandboxes keep plain folders, without a disk quota."
    if not kernel_has_btrfs():
        return "This kernel has no btrfs: sandboxes keep plain folders, without a disk quota (the checklist says so)."
    found = mounted_at(root)
    if found is None:
        if root.is_dir() and any(root.iterdir()):
            return (
                f"{root} holds sandboxes in plain folders and no pool is mounted there; they keep working without a disk quota. "
                "`manage.py pool migrate` moves them into a pool."
            )
        root.mkdir(parents=True, exist_ok=True)
        if settings.STORAGE_POOL == "loop":
            said = _mount_loop(root)
        else:
            said = _mount_named(root, Path(settings.STORAGE_POOL))
    elif found.fstype != "btrfs":
        raise PoolError(f"{root} is a mount point of {found.fstype}, not btrfs: unmount it, or set STORAGE_POOL=none.")
    else:
        said = f"the storage pool is mounted at {root}"
    _harden(root)
    return said


def mount_loop_at(point: Path) -> str:
    """The loop-file pool (made if missing) mounted at `point`, quotas on: `pool migrate`
    fills it there before it takes WORKSPACE_ROOT's place."""
    said = _mount_loop(point)
    if not quotas_on(point):
        _enable_quotas(point)
    return said


def unmount_at(point: Path) -> None:
    if mounted_at(point) is not None:
        _run("umount", str(point))


def _mount_loop(root: Path) -> str:
    image = Path(settings.STORAGE_POOL_FILE)
    made = ""
    if not image.exists():
        image.parent.mkdir(parents=True, exist_ok=True)
        size_mb = settings.STORAGE_POOL_SIZE_MB or default_size_mb(image.parent)
        tmp = image.with_name(image.name + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            # Allocated up front: a host disk that fills up later cannot turn into I/O errors
            # inside the pool.
            os.posix_fallocate(fd, 0, size_mb * 1024 * 1024)
        except OSError as exc:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise PoolError(f"Could not allocate {size_mb} MiB for {image}: {exc}") from None
        os.close(fd)
        # Metadata once, not twice (a loop file on one disk gains nothing from two copies): a
        # quota of N MB then costs the pool about N MB, also in small files kept in metadata.
        # -K: no discard, which would punch holes in the file and undo its allocation.
        _run("mkfs.btrfs", "-q", "-K", "-L", "ccpanel-pool", "-m", "single", "-d", "single", str(tmp))
        os.replace(tmp, image)
        made = f"made a {size_mb} MiB storage pool in {image}; "
    # nodiscard: btrfs would otherwise pass deletes on to the loop file as holes, and the space a
    # sandbox frees would go back to the host's disk, to be taken by something else.
    _run("mount", "-o", "loop,nosuid,nodev,nodiscard", str(image), str(root))
    return f"{made}mounted {image} at {root}"


def _mount_named(root: Path, fs: Path) -> str:
    found = mounted_at(fs)
    if found is None or found.fstype != "btrfs":
        raise PoolError(f"STORAGE_POOL={fs} is not the mount point of a btrfs file system.")
    sub = fs / f"ccpanel-{settings.PANEL_INSTANCE}"
    if not sub.exists():
        _run("btrfs", "subvolume", "create", str(sub))
    _run("mount", "--bind", str(sub), str(root))
    _run("mount", "-o", "remount,bind,nosuid,nodev", str(root))
    return f"mounted {sub} at {root}"


def _harden(root: Path) -> None:
    found = mounted_at(root)
    loop = settings.STORAGE_POOL == "loop"
    discarding = loop and found is not None and any(o.startswith("discard") for o in found.fs_options)
    if found is not None and (not {"nosuid", "nodev"} <= found.options or discarding):
        _run("mount", "-o", "remount,nosuid,nodev" + (",nodiscard" if loop else ""), str(root))
    if loop and Path(settings.STORAGE_POOL_FILE).exists():
        _allocate_whole(Path(settings.STORAGE_POOL_FILE))
    if not quotas_on(root):
        _enable_quotas(root)
    if os.geteuid() == 0:
        os.chown(root, 0, 0)
    # No other host user may list, read or enter a sandbox's folders.
    os.chmod(root, 0o700)
    for folder in (CHECKPOINTS, SNAPSHOTS):
        (root / folder).mkdir(mode=0o700, exist_ok=True)


def _allocate_whole(image: Path) -> None:
    """Every block of the loop file allocated on the host's disk (idempotent: fills any hole a
    discard once punched), so that the pool can never run into a full host disk."""
    fd = os.open(image, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        raise PoolError(f"The host's disk has no room to allocate the whole pool file {image}: {exc}") from None
    finally:
        os.close(fd)


def unmount() -> None:
    """Unmount the pool (its loop device goes with it); the loop file stays."""
    if mounted_at(settings.WORKSPACE_ROOT) is not None:
        _run("umount", str(settings.WORKSPACE_ROOT))


def grow(size_mb: int) -> str:
    """Grow the loop file to `size_mb` and the file system with it, while mounted."""
    if settings.STORAGE_POOL != "loop":
        raise PoolError("Only a loop-file pool is grown by the panel; grow a named file system with btrfs itself.")
    image = Path(settings.STORAGE_POOL_FILE)
    found = mounted_at(settings.WORKSPACE_ROOT)
    if found is None or not image.exists():
        raise PoolError("The pool is not mounted: run `make run` (or `manage.py pool ensure`) first.")
    now = image.stat().st_size
    if size_mb * 1024 * 1024 <= now:
        raise PoolError(f"The pool is {now // (1024 * 1024)} MiB already; give a larger size.")
    fd = os.open(image, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.posix_fallocate(fd, 0, size_mb * 1024 * 1024)
    finally:
        os.close(fd)
    _run("losetup", "-c", found.source)
    _run("btrfs", "filesystem", "resize", "max", str(settings.WORKSPACE_ROOT))
    return f"the pool is now {size_mb} MiB"


def _enable_quotas(root: Path) -> None:
    """Simple quotas where the kernel has them (6.7 and later), else full qgroups.

    Simple quotas matter for containment, not only speed: a subvolume that a sandbox makes
    inside its own folders (btrfs lets any owner of a folder do that, no capability needed)
    joins its parent's quota group, so it cannot be used to write past the quota. With full
    qgroups such a subvolume would be in no group, and nothing checks for one afterwards: what
    stops a sandbox making one is its seccomp profile, which refuses the btrfs ioctls (under
    gVisor none reaches the host's kernel at all)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # BTRFS_IOC_QUOTA_CTL with BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA: btrfs-progs before 6.7
        # has no word for it.
        fcntl.ioctl(fd, _IOC_QUOTA_CTL, bytearray(struct.pack("QQ", 4, 0)))
        return
    except OSError as exc:
        log.warning("simple quotas are not available (%s); using full qgroups", exc)
    finally:
        os.close(fd)
    _run("btrfs", "quota", "enable", str(root))


_IOC_QUOTA_CTL = (3 << 30) | (16 << 16) | (0x94 << 8) | 40


def quota_mode() -> str:
    """ "squota" (simple quotas), "qgroup" (full) or "" (no quotas, or no pool)."""
    folder = _sysfs(settings.WORKSPACE_ROOT)
    try:
        return (folder / "qgroups" / "mode").read_text().strip() if folder else ""
    except OSError:
        return ""


def quotas_on(root: Path | str) -> bool:
    folder = _sysfs(root)
    return folder is not None and (folder / "qgroups").is_dir()


def _sysfs(point: Path | str) -> Path | None:
    """/sys/fs/btrfs/<fsid>/ of the file system mounted at `point`."""
    found = mounted_at(point)
    if found is None:
        return None
    return _sysfs_of(found.source, str(point))


_FSID: dict[str, str] = {}


def _sysfs_of(source: str, point: str) -> Path | None:
    key = f"{source}@{point}"
    if key not in _FSID:
        try:
            out = _run("btrfs", "filesystem", "show", "--raw", point, timeout=20)
        except PoolError:
            return None
        for word in out.split():
            if word.count("-") == 4 and len(word) == 36:
                _FSID[key] = word
                break
        else:
            return None
    return Path("/sys/fs/btrfs") / _FSID[key]


# --- subvolumes, quotas, snapshots -------------------------------------------------------------------


def is_subvolume(path: str | Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return st.st_ino == 256 and os.path.isdir(path)


def subvolume_id(path: str | Path) -> int:
    return int(_run("btrfs", "inspect-internal", "rootid", str(path)).strip())


SUBVOLUME_INO = 256  # the root folder of every btrfs subvolume has this inode number


def create_subvolume(path: str | Path) -> None:
    _run("btrfs", "subvolume", "create", str(path))


def ensure_group(path: str | Path, *, limit_mb: int, fs: Path | None = None) -> str:
    """Put the subvolume at `path` in a quota group of its own, 1/<its id>, limited to
    `limit_mb`; returns the group. Idempotent (a redelivered create finds it done). `fs`: where
    the pool is mounted, when not at WORKSPACE_ROOT (pool migrate)."""
    sub_id = subvolume_id(path)
    group = f"1/{sub_id}"
    for args in (("create", group), ("assign", f"0/{sub_id}", group)):
        try:
            _run("btrfs", "qgroup", *args, str(fs or settings.WORKSPACE_ROOT))
        except PoolError as exc:
            if "File exists" not in str(exc):
                raise
    set_limit(group, limit_mb, fs=fs)
    return group


def set_limit(group: str, limit_mb: int, *, fs: Path | None = None) -> None:
    _run("btrfs", "qgroup", "limit", f"{int(limit_mb)}M", group, str(fs or settings.WORKSPACE_ROOT))


Limit = Callable[[], int | None] | None  # the group's quota in MB, asked only if a step needs headroom


def snapshot(source: str | Path, dest: str | Path, *, group: str, read_only: bool, limit_mb: Limit = None) -> None:
    """A snapshot of `source` at `dest`, in `group` (so it counts against the same quota)."""
    args = ["btrfs", "subvolume", "snapshot", *(["-r"] if read_only else []), "-i", group, str(source), str(dest)]
    _with_headroom(group, limit_mb, lambda: _run(*args))


def delete(path: str | Path, *, group: str = "", limit_mb: Limit = None) -> None:
    """Delete the subvolume at `path` (read-only or not); nothing there is fine."""
    if os.path.lexists(path):
        _with_headroom(group, limit_mb, lambda: _run("btrfs", "subvolume", "delete", str(path)))


HEADROOM_MB = 256


def _with_headroom(group: str, limit: Limit, step) -> None:
    """Run `step`; if btrfs refuses it because the group is at its quota (making or deleting a
    subvolume needs a little metadata, charged to the group: a full sandbox could otherwise be
    neither checkpointed, backed up nor emptied), raise the limit by HEADROOM_MB for that one
    step and put it back. The sandbox can use that headroom only for the step's few
    milliseconds."""
    try:
        step()
        return
    except PoolError as exc:
        limit_mb = limit() if limit is not None else None
        if not group or limit_mb is None or "quota" not in str(exc).lower():
            raise
    set_limit(group, limit_mb + HEADROOM_MB)
    try:
        step()
    finally:
        set_limit(group, limit_mb)


def lift_limit(group: str) -> None:
    """No limit on the group any more (Destroy: deleting needs room, and nothing is kept)."""
    _run("btrfs", "qgroup", "limit", "none", group, str(settings.WORKSPACE_ROOT))


def destroy_group(group: str) -> None:
    """Forget a quota group whose subvolumes are all deleted (best effort: btrfs may keep a
    deleted subvolume's own group a while; nothing is limited by it)."""
    try:
        _run("btrfs", "qgroup", "destroy", group, str(settings.WORKSPACE_ROOT))
    except PoolError as exc:
        log.info("quota group %s left: %s", group, exc)


def release_group(group: str) -> None:
    """Before its subvolume is deleted: take the subvolume out of its own quota group (1/<id>,
    which holds 0/<id> alone: ensure_group) and destroy the group. Afterwards btrfs refuses to
    destroy it while the deleted subvolume's own group is still in it, and it is left for good.
    The subvolume holds no block of another's (never a snapshot), so btrfs updates the numbers
    at once; a rescan is scheduled only if it says one is needed. Best effort, as destroy_group."""
    level, _, sub = group.partition("/")
    if level != "1" or not sub.isdigit():
        raise PoolError(f"{group!r} is not a subvolume's own quota group")
    try:
        _run("btrfs", "qgroup", "remove", f"0/{sub}", group, str(settings.WORKSPACE_ROOT))
    except PoolError as exc:
        log.info("quota group %s: its subvolume could not be taken out (%s)", group, exc)
    destroy_group(group)


@dataclass(frozen=True)
class Usage:
    used: int  # bytes the group references (live data and checkpoints, shared blocks once)
    limit: int | None  # bytes, or None for no limit

    @property
    def percent(self) -> float | None:
        return None if not self.limit else 100.0 * self.used / self.limit


def usage(group: str) -> Usage | None:
    """A quota group's use and limit, read from sysfs (no process started): cheap enough for
    every page and every live update. None when it cannot be read."""
    folder = _sysfs(settings.WORKSPACE_ROOT)
    if folder is None or not group:
        return None
    base = folder / "qgroups" / group.replace("/", "_")
    try:
        used = int((base / "referenced").read_text())
        limit = int((base / "max_referenced").read_text())
    except (OSError, ValueError):
        return None
    return Usage(used, limit or None)


def exclusive(path: str | Path, *, timeout: float = 30.0) -> int | None:
    """Bytes held only by the subvolume at `path` (what deleting it would free), or None when
    that is not known (within `timeout` seconds).

    Full qgroups count them in the subvolume's own group (0/<id>), read from sysfs. Simple
    quotas do not: they charge each extent to the subvolume that wrote it for as long as the
    extent lives, so a checkpoint's own group holds a few KB even when it alone keeps what the
    live copy has since deleted. There the file system's own walk counts them (`btrfs
    filesystem du`: the extents no other file refers to), about 0.3 s a GB in 10,000 files."""
    folder = _sysfs(settings.WORKSPACE_ROOT)
    if folder is None:
        return None
    if quota_mode() == "squota":
        try:
            out = _run("btrfs", "filesystem", "du", "-s", "--raw", str(path), timeout=timeout)
            return int(out.strip().splitlines()[-1].split()[1])
        except (PoolError, IndexError, ValueError):
            return None
    try:
        return int((folder / "qgroups" / f"0_{subvolume_id(path)}" / "exclusive").read_text())
    except (OSError, ValueError, PoolError):
        return None
