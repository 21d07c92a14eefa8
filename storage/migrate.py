"""Moving sandboxes that keep plain folders into the storage pool (`manage.py pool migrate`).

Each sandbox's six folders and its home volume are copied into a new subvolume with a quota,
every file's sha256 compared before and after, and only then is anything old let go: the old
folders are kept, renamed, until the admin deletes them, and the home volume is replaced only
once its copy matched. The sandbox keeps its identity (its UUID, name, container name and
volume name); its folders' identities are recorded again, as at a create. Audited per sandbox.

Two cases:
- no pool mounted yet, WORKSPACE_ROOT holds plain folders (an install from before the pool):
  the pool is made and mounted beside it, filled, and then mounted at WORKSPACE_ROOT in place of
  the old folder (renamed WORKSPACE_ROOT.before-pool-<time>);
- the pool is mounted but some sandboxes keep plain folders inside it (made while the pool was
  off): each is copied into a subvolume next to it and swapped in by a rename.

Sandboxes must be stopped (not running, paused or busy): their containers are removed (Start
makes new ones), since a volume in use cannot be replaced.
"""

import hashlib
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from sandboxes import engine, workspace
from sandboxes.models import Sandbox
from sandboxes.services.auditing import audit
from sandboxes.services.claims import beating, claim, claimed
from sandboxes.services.errors import SandboxError
from sandboxes.services.specs import labels
from teams.permissions import SystemActor

from . import pool

S = Sandbox.Status
J = Sandbox.Job


class MigrateError(Exception):
    """The migration cannot go on; nothing was let go (the message says what to do)."""


def tree_digest(root: str) -> dict[str, str]:
    """relative path -> sha256 of content (files), target (links) or "dir", for everything
    under `root`, never following a link."""
    found: dict[str, str] = {}
    for top, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = os.path.join(top, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = "link:" + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = f"dir:{stat.S_IMODE(st.st_mode):o}:{st.st_uid}"
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as fh:
                    found[rel] = hashlib.file_digest(fh, "sha256").hexdigest()
            else:
                found[rel] = f"other:{stat.S_IFMT(st.st_mode)}"
    return found


def _copy(source: str, dest: str) -> None:
    """Everything in `source` into `dest` (owners, modes, times, links as links, holes kept)."""
    done = subprocess.run(
        ["cp", "-a", "--sparse=always", "--no-dereference", f"{source}/.", dest], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise MigrateError(f"copying {source} failed: {done.stderr.strip()[:500]}")


def candidates() -> list[Sandbox]:
    return [s for s in Sandbox.objects.exclude(status=S.DESTROYED).order_by("name") if not s.in_pool]


def migrate(*, say: Callable[[str], None] = print) -> list[str]:
    """Move every sandbox with plain folders into the pool; returns their names."""
    if not pool.enabled():
        raise MigrateError("STORAGE_POOL=none (or no btrfs in the kernel): there is no pool to move into.")
    if not pool.active() and settings.STORAGE_POOL != "loop":
        raise MigrateError(
            f"Moving plain folders into a named btrfs file system ({settings.STORAGE_POOL}) is not done by the panel: "
            "use STORAGE_POOL=loop, or move them by hand."
        )
    movers = _claim_all(candidates())
    pks = [s.pk for s in movers]
    # Beat for every sandbox held: the periodic resync takes a claim without a heartbeat for a
    # worker that died, and a copy may take hours.
    beat = beating(lambda: Sandbox.objects.filter(pk__in=pks, pending_action=J.MIGRATE).update(heartbeat_at=timezone.now()), "pool migrate")
    try:
        with beat:
            return _migrate(movers, say)
    finally:
        for sandbox in movers:
            claimed(sandbox, J.MIGRATE).update(pending_action="", heartbeat_at=None)


def _claim_all(movers: list[Sandbox]) -> list[Sandbox]:
    """Hold every sandbox to move for the whole run (nothing starts one meanwhile), each stopped
    with no container running (asked of the engine, not of its status)."""
    busy = [
        f"{s.name} ({s.pending_action or s.status})" for s in movers if s.pending_action or s.status not in (S.STOPPED, S.ERROR, S.CREATING)
    ]
    for s in movers:
        state = engine.engine_for(s).container_state(s.container_id) if s.container_id and not s.pending_action else None
        if state is not None and state.status in ("running", "paused", "restarting"):
            busy.append(f"{s.name} (its container is {state.status})")
    if busy:
        raise MigrateError("Stop these sandboxes first (and let what they are doing finish): " + ", ".join(sorted(set(busy))))
    taken: list[Sandbox] = []
    try:
        with transaction.atomic():
            for s in movers:
                claim(sandbox=s, action=J.MIGRATE, allowed_from=(S.STOPPED, S.ERROR, S.CREATING))
                taken.append(s)
    except SandboxError as exc:
        raise MigrateError(str(exc)) from exc
    return taken


def _migrate(movers: list[Sandbox], say: Callable[[str], None]) -> list[str]:
    root = Path(settings.WORKSPACE_ROOT)
    if pool.active():
        into, swap_root = root, False
    else:
        into, swap_root = _mount_beside(root), True
    moved = []
    try:
        for sandbox in movers:
            if not (root / sandbox.name).is_dir():
                say(f"{sandbox.name}: no folder at {root / sandbox.name}; skipped")
                continue
            _copy_one(sandbox, root / sandbox.name, into, say)
            moved.append(sandbox)
    except BaseException:
        for sandbox in moved:  # nothing of the old is let go: the copies go
            pool.delete(into / (sandbox.name if swap_root else f".migrating-{sandbox.name}"))
        if swap_root:
            pool.unmount_at(into)
        raise
    if swap_root:
        kept = root.with_name(f"{root.name}.before-pool-{timezone.now():%Y%m%d-%H%M%S}")
        os.rename(root, kept)
        os.chmod(kept, 0o700)  # what a sandbox left there (a setuid file) stays out of other users' reach
        os.mkdir(root, 0o700)
        pool.unmount_at(into)
        os.rmdir(into)
        pool.ensure()
        say(f"the old folders are kept in {kept}; delete it once the sandboxes work")
    for sandbox in moved:
        _adopt(sandbox, in_place=not swap_root, say=say)
    return [s.name for s in moved]


def _mount_beside(root: Path) -> Path:
    """Make (if missing) and mount the pool at WORKSPACE_ROOT.migrating, to fill it there."""
    beside = root.with_name(f"{root.name}.migrating")
    beside.mkdir(mode=0o700, exist_ok=True)
    pool.mount_loop_at(beside)
    return beside


def _copy_one(sandbox: Sandbox, source: Path, into: Path, say: Callable[[str], None]) -> None:
    in_place = into == Path(settings.WORKSPACE_ROOT)
    dest = into / (f".migrating-{sandbox.name}" if in_place else sandbox.name)
    pool.delete(dest)
    before = tree_digest(str(source))
    home_source = _home_source(sandbox)
    home_before = tree_digest(home_source) if home_source else {}
    pool.create_subvolume(dest)
    os.chmod(dest, 0o755)  # noqa: S103 - a sandbox's workspace is 755, as the panel makes it (the checklist holds it to that)
    # Its quota from the start (what is copied counts), raised if its data would not fit.
    need_mb = (_bytes_of(str(source)) + _bytes_of(home_source)) * 5 // 4 // 1048576 + settings.SANDBOX_MIN_DISK_MB
    disk_mb = max(sandbox.disk_mb or settings.SANDBOX_DEFAULT_DISK_MB, need_mb)
    if disk_mb != (sandbox.disk_mb or settings.SANDBOX_DEFAULT_DISK_MB):
        say(f"{sandbox.name}: its data needs a quota of {disk_mb} MB; it gets that")
    sandbox.disk_mb = disk_mb
    pool.ensure_group(dest, limit_mb=disk_mb, fs=into)
    _copy(str(source), str(dest))
    (dest / workspace.HOME).mkdir(mode=0o700, exist_ok=True)
    os.chown(dest / workspace.HOME, settings.SANDBOX_UID, settings.SANDBOX_GID)
    if home_source:
        _copy(home_source, str(dest / workspace.HOME))
    after = tree_digest(str(dest))
    home_after = tree_digest(str(dest / workspace.HOME))
    after = {k: v for k, v in after.items() if k != workspace.HOME and not k.startswith(workspace.HOME + "/")}
    if before != after or home_before != home_after:
        differ = sorted(set(before.items()) ^ set(after.items()) | set(home_before.items()) ^ set(home_after.items()))[:5]
        raise MigrateError(f"{sandbox.name}: the copy differs from the original ({differ}); nothing was changed.")
    sandbox.migrate_counts = (len(before), len(home_before))  # type: ignore[attr-defined]
    say(f"{sandbox.name}: {len(before)} entries and {len(home_before)} in its home copied, every hash equal")


def _bytes_of(folder: str) -> int:
    if not folder:
        return 0
    done = subprocess.run(["du", "-s", "--block-size=1", folder], capture_output=True, text=True, check=False)
    try:
        return int(done.stdout.split()[0])
    except (IndexError, ValueError):
        return 0


def _home_source(sandbox: Sandbox) -> str:
    """Where the engine keeps the home volume's files on this machine ("" if it has none)."""
    docker = engine.engine_for(sandbox)
    if not docker.volume_exists(sandbox.volume_name):
        return ""
    return docker.volume_mountpoint(sandbox.volume_name)


def _adopt(sandbox: Sandbox, *, in_place: bool, say: Callable[[str], None]) -> None:
    root = Path(settings.WORKSPACE_ROOT)
    if in_place:
        aside = root / f".before-pool-{sandbox.name}"
        os.rename(root / sandbox.name, aside)
        os.rename(root / f".migrating-{sandbox.name}", root / sandbox.name)
    docker = engine.engine_for(sandbox)
    if sandbox.container_id:
        docker.remove_container(sandbox.container_id)
    docker.remove_container_if_ours(sandbox.container_name, labels=labels(sandbox))
    docker.remove_volume(sandbox.volume_name, labels=labels(sandbox))  # its files are in home/ now
    chains = workspace.workspace_create(sandbox.name, str(sandbox.uuid), subvolume=True)
    disk_mb = sandbox.disk_mb or settings.SANDBOX_DEFAULT_DISK_MB
    group = pool.ensure_group(sandbox.workspace_path, limit_mb=disk_mb)  # made with the copy: only checked here
    recorded = {**(sandbox.host_path_ids or {}), **{p: [list(pair) for pair in c] for p, c in chains.items()}}
    with transaction.atomic():
        claimed(sandbox, J.MIGRATE).update(
            host_path_ids=recorded, disk_group=group, disk_mb=disk_mb, container_id="", status=S.STOPPED, status_detail=""
        )
        files, home = getattr(sandbox, "migrate_counts", (0, 0))
        audit(SystemActor("pool migrate"), "sandbox.moved_into_pool", sandbox, {"entries": files, "home_entries": home, "disk_mb": disk_mb})
    if in_place:
        from sandboxes import fdwalk

        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fdwalk.remove_tree(root_fd, f".before-pool-{sandbox.name}")
        finally:
            os.close(root_fd)
    say(f"{sandbox.name}: in the pool, quota {disk_mb} MB")
