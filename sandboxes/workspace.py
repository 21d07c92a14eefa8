"""The sandbox's folders on the host, under WORKSPACE_ROOT/<name>/.

    WORKSPACE_ROOT/                         0700 (no other host user enters); with the storage
                                            pool, a btrfs file system mounted nosuid,nodev
      <name>/                               root-owned, 0755, never mounted; in the pool, a
                                            subvolume with a disk quota (storage.pool)
        .ccpanel-sandbox                    marker: the sandbox's UUID
        Projects/ Documentation/ Research/  uid 1000, 0755, each mounted at /workspace/<folder>
        shared/ imports/ exports/
        home/                               in the pool only: uid 1000, 0700, the home volume's
                                            files (the volume is bound to it), never a mount
                                            of its own

The sandbox sees only the six folders, each as a mount point, and cannot rename or replace them:
their parent is root's and is not mounted anywhere. Everything here works relative to file
descriptors opened with O_NOFOLLOW (mkdirat, fchmod, fchown, fstat, unlinkat), so a folder
swapped for a symbolic link half-way changes nothing outside the workspace: the next step fails
instead of following the link.

Where this runs. A bind source is a path on the machine that runs the Docker engine, so the
folders are made, checked (policy.dir_chain, engine.mounted_identities) and removed on that
machine. Today that is always this machine: the panel and its one engine share a host, and the
panel calls these functions directly. When sandboxes run on remote hosts, this module and the
on-disk half of the policy move with the engine: each host runs a small agent (the same code,
reached over the host's authenticated channel, as EngineClient reaches its Docker) that makes,
judges and removes folders there, and EngineClient(host) gains the calls to it. Callers do not
change: they already ask `engine_for(sandbox)`, and nothing here assumes one global host.
"""

import ctypes
import errno
import os
import re
from typing import TYPE_CHECKING

from django.conf import settings

from storage import pool

from . import fdwalk, policy

if TYPE_CHECKING:
    from .models import Sandbox

# folder name -> mounted read-only inside the container
FOLDERS: dict[str, bool] = {
    "Projects": False,
    "Documentation": False,
    "Research": False,
    "shared": False,
    "imports": True,
    "exports": False,
}
HOME = "home"  # a pool sandbox's home, beside the six folders
MARKER = ".ccpanel-sandbox"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class WorkspaceError(Exception):
    """A workspace folder that cannot be used as it is; the message says what is in the way."""


def _open_root() -> int:
    root = str(settings.WORKSPACE_ROOT)
    if not os.path.isdir(root):
        os.makedirs(root, exist_ok=True)
    if os.geteuid() == 0 and os.stat(root).st_mode & 0o077:
        os.chmod(root, 0o700)  # no other host user may list or enter the sandboxes' folders
    try:
        return policy.open_dir_nofollow(root, flags=os.O_RDONLY)
    except policy.HostPathError as exc:
        raise WorkspaceError(f"The workspace root cannot be used: {exc}") from None


class FolderReplaced(WorkspaceError):
    """A sandbox's folder that is not the one recorded at create (swapped on the host)."""


def open_sandbox_folder(sandbox: "Sandbox", folder: str | None = None, *, recorded: bool = False) -> int:
    """The sandbox's workspace folder, or one of its six, opened for reading from / down without
    following any link (policy.HostPathError names the link or the missing part). With
    `recorded`, it must also be the very folder recorded at create, when one was (FolderReplaced
    otherwise): what a transfer or a backup reads is the folder the sandbox was approved with.
    The caller closes the fd."""
    path = str(sandbox.workspace_path / folder) if folder else str(sandbox.workspace_path)
    fd = policy.open_dir_nofollow(path, flags=os.O_RDONLY)
    if recorded:
        st = os.fstat(fd)
        ids = (sandbox.host_path_ids or {}).get(path)
        if ids and tuple(ids[-1]) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise FolderReplaced(f"{path} was replaced since the sandbox was created")
    return fd


def _read_marker(base_fd: int) -> str | None:
    try:
        fd = os.open(MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=base_fd)
    except FileNotFoundError:
        return None
    except OSError:
        return "?"
    try:
        return os.read(fd, 200).decode(errors="replace").strip()
    finally:
        os.close(fd)


def read_marker(name: str) -> str | None:
    """The UUID in WORKSPACE_ROOT/<name>/'s marker, or None (no folder, no marker, not a folder)."""
    if policy.check_name(name):
        return None
    try:
        root_fd = policy.open_dir_nofollow(str(settings.WORKSPACE_ROOT), flags=os.O_RDONLY)
    except policy.HostPathError:
        return None
    try:
        base_fd = os.open(name, _DIR, dir_fd=root_fd)
    except OSError:
        return None
    finally:
        os.close(root_fd)
    try:
        return _read_marker(base_fd)
    finally:
        os.close(base_fd)


def _check_name(name: str) -> None:
    if policy.check_name(name):
        raise WorkspaceError(f"{name!r} is not a valid sandbox name for a folder.")


Chain = tuple[tuple[int, int], ...]


def workspace_create(name: str, uuid: str, *, subvolume: bool = False) -> dict[str, Chain]:
    """Create the sandbox's folder, its marker and the six folders (and, as a subvolume of the
    storage pool, its home folder); return, for each of them, the (device, inode) of every
    folder from / down to it, to be recorded and checked again before every start.

    Never adopts someone else's data: a folder that exists already is used only if it carries
    this sandbox's marker (a redelivered task) or is empty; otherwise WorkspaceError says what
    is in the way."""
    _check_name(name)
    root_fd = _open_root()
    try:
        if subvolume and not os.path.lexists(settings.WORKSPACE_ROOT / name):
            pool.create_subvolume(settings.WORKSPACE_ROOT / name)
        try:
            base_fd = fdwalk.open_dir(name, root_fd, make=True)
        except fdwalk.NotAFolder:
            raise WorkspaceError(f"The workspace folder {name}/ exists and is not a plain folder; an admin must move it away.") from None
        try:
            if subvolume and os.fstat(base_fd).st_ino != pool.SUBVOLUME_INO:
                raise WorkspaceError(
                    f"The workspace folder {name}/ is a plain folder, not a subvolume of the pool; an admin must move it away."
                )
            return _fill(base_fd, name, uuid, home=subvolume)
        finally:
            os.close(base_fd)
    finally:
        os.close(root_fd)


def _fill(base_fd: int, name: str, uuid: str, *, home: bool) -> dict[str, Chain]:
    base = settings.WORKSPACE_ROOT / name
    marker = _read_marker(base_fd)
    if marker is None:
        if os.listdir(base_fd):
            raise WorkspaceError(
                f"The workspace folder {name}/ already holds files from something else; it is never "
                "reused. Pick another name, or an admin moves it away."
            )
        fd = os.open(MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=base_fd)
        try:
            os.write(fd, f"{uuid}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    elif marker != uuid:
        raise WorkspaceError(
            f"The workspace folder {name}/ belongs to another sandbox; it is never reused. Pick another name, or an admin moves it away."
        )
    is_root = os.geteuid() == 0
    if is_root:
        os.fchown(base_fd, 0, 0)
    os.fchmod(base_fd, 0o755)
    chains = {}
    trusted = {0, os.geteuid()}
    for folder in (*FOLDERS, *((HOME,) if home else ())):
        try:
            fd = fdwalk.open_dir(folder, base_fd, make=True)
        except fdwalk.NotAFolder:
            raise WorkspaceError(f"{name}/{folder} is not a plain folder (a link?); refusing to use it.") from None
        try:
            if is_root:
                os.fchown(fd, settings.SANDBOX_UID, settings.SANDBOX_GID)
            os.fchmod(fd, 0o700 if folder == HOME else 0o755)
            st = os.fstat(fd)
            path = str(base / folder)
            # Walked again by path, as Docker will: it must reach the very folder made here.
            try:
                chain = policy.dir_chain(path, root=str(settings.WORKSPACE_ROOT), trusted_uids=trusted)
            except policy.HostPathError as exc:
                raise WorkspaceError(f"{name}/{folder} cannot be used: {exc}") from None
            if chain[-1] != (st.st_dev, st.st_ino):
                raise WorkspaceError(f"{name}/{folder} was replaced while it was being made; refusing to use it.")
            chains[path] = chain
        finally:
            os.close(fd)
    return chains


# The warm pool's slots (sandboxes.services.warm): WORKSPACE_ROOT/.warm/<key>, each a subvolume
# made and filled like a sandbox's folder, and renamed to WORKSPACE_ROOT/<name> by the create that
# takes it. ".warm" can never be a sandbox's name (policy.check_name), and "<key>" is hex.
WARM = ".warm"
_KEY = re.compile(r"[0-9a-f]{8,32}")
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise WorkspaceError(f"{key!r} is not a warm slot's key.")


def slot_path(key: str):
    return settings.WORKSPACE_ROOT / WARM / key


def _open_warm(root_fd: int, *, make: bool) -> int:
    try:
        fd = fdwalk.open_dir(WARM, root_fd, make=make)
    except fdwalk.NotAFolder:
        raise WorkspaceError(f"{settings.WORKSPACE_ROOT / WARM} is not a plain folder; an admin must move it away.") from None
    if os.geteuid() == 0:
        os.fchown(fd, 0, 0)  # on every folder's way from / a trusted owner (policy.dir_chain)
    os.fchmod(fd, 0o700)
    return fd


def slot_create(key: str, uuid: str) -> dict[str, Chain]:
    """A warm slot's folders: a subvolume of the storage pool at WORKSPACE_ROOT/.warm/<key>,
    filled as a sandbox's is (the six folders, the home, the marker with `uuid`, which the
    sandbox that takes it gets); returns their chains, as workspace_create does."""
    _check_key(key)
    root_fd = _open_root()
    try:
        warm_fd = _open_warm(root_fd, make=True)
        try:
            if not os.path.lexists(slot_path(key)):
                pool.create_subvolume(slot_path(key))
            base_fd = fdwalk.open_dir(key, warm_fd)
            try:
                if os.fstat(base_fd).st_ino != pool.SUBVOLUME_INO:
                    raise WorkspaceError(f"{slot_path(key)} is not a subvolume of the pool.")
                return _fill(base_fd, f"{WARM}/{key}", uuid, home=True)
            finally:
                os.close(base_fd)
        finally:
            os.close(warm_fd)
    finally:
        os.close(root_fd)


def slot_take(key: str, name: str, uuid: str) -> None:
    """Rename the slot's subvolume to the sandbox's folder WORKSPACE_ROOT/<name>: never over
    anything there (renameat2 RENAME_NOREPLACE), and only a slot that carries `uuid`. Done
    already (a redelivered start) when the slot is gone and <name> carries `uuid`."""
    _check_key(key)
    _check_name(name)
    root_fd = _open_root()
    try:
        try:
            warm_fd = os.open(WARM, _DIR, dir_fd=root_fd)
        except FileNotFoundError:
            warm_fd = -1
        try:
            try:
                base_fd = os.open(key, _DIR, dir_fd=warm_fd) if warm_fd >= 0 else -1
            except FileNotFoundError:
                base_fd = -1
            if base_fd < 0:
                if read_marker(name) == uuid:
                    return
                raise WorkspaceError(f"The warm slot {key} is gone.")
            try:
                if _read_marker(base_fd) != uuid:
                    raise WorkspaceError(f"The warm slot {key} does not carry the UUID it was made with.")
            finally:
                os.close(base_fd)
            if _libc.renameat2(warm_fd, key.encode(), root_fd, name.encode(), _RENAME_NOREPLACE) != 0:
                code = ctypes.get_errno()
                if code == errno.EEXIST:
                    raise WorkspaceError(f"{settings.WORKSPACE_ROOT / name} exists; the slot was not moved there.")
                raise OSError(code, os.strerror(code), str(slot_path(key)))
        finally:
            if warm_fd >= 0:
                os.close(warm_fd)
    finally:
        os.close(root_fd)


def slot_remove(key: str) -> None:
    """Delete a slot's subvolume (a slot never taken holds nothing of anyone's)."""
    _check_key(key)
    path = slot_path(key)
    if not os.path.lexists(path):
        return
    root_fd = _open_root()
    try:
        warm_fd = _open_warm(root_fd, make=False)
        try:
            if _is_subvolume(warm_fd, key):
                try:
                    pool.delete(path)
                    return
                except pool.PoolError:
                    pass  # a subvolume inside it (made by hand): the walk below empties both
            fdwalk.remove_tree(warm_fd, key)  # fd-based, never following a link inside
        finally:
            os.close(warm_fd)
    finally:
        os.close(root_fd)


def slot_keys() -> list[str]:
    """The keys of the slots on disk."""
    try:
        return sorted(k for k in os.listdir(settings.WORKSPACE_ROOT / WARM) if _KEY.fullmatch(k))
    except FileNotFoundError:
        return []


def workspace_remove(name: str, uuid: str) -> str:
    """Delete the sandbox's folder and everything in it (destroy only), if it carries this
    sandbox's marker. Returns "" when done or nothing was there, else why it was left alone."""
    if policy.check_name(name):
        return f"no folder removed: {name!r} is not a valid folder name"
    root = settings.WORKSPACE_ROOT
    if not root.exists():
        return ""
    root_fd = _open_root()
    try:
        try:
            base_fd = os.open(name, _DIR, dir_fd=root_fd)
        except FileNotFoundError:
            return ""
        except OSError:
            return f"{root / name} is not a plain folder; left in place"
        try:
            marker = _read_marker(base_fd)
        finally:
            os.close(base_fd)
        if marker != uuid:
            return f"{root / name} does not carry this sandbox's marker; left in place"
        base = str(root / name)
        try:
            mounted = [m.point for m in policy.read_mountinfo() if policy.is_within(m.point, base)]
        except policy.HostPathError as exc:
            return f"{base} left in place: {exc} (whatever might be mounted inside would be deleted too)"
        if mounted:
            # Removing would empty the mounted folder too: whatever is mounted there is not ours.
            return f"{base} has {mounted[0]} mounted inside it; left in place (unmount it, then destroy again)"
        if _is_subvolume(root_fd, name):
            try:
                pool.delete(base)  # at once, whatever it holds (btrfs frees it in the background)
                return ""
            except pool.PoolError:
                pass  # a subvolume inside it (made by hand): the walk below empties both
        fdwalk.remove_tree(root_fd, name)  # fd-based, any depth, never following a link inside
        return ""
    finally:
        os.close(root_fd)


def _is_subvolume(root_fd: int, name: str) -> bool:
    try:
        st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
    except OSError:
        return False
    return st.st_ino == pool.SUBVOLUME_INO and st.st_dev != os.fstat(root_fd).st_dev


def replace_contents(name: str, uuid: str, folder: str, source: str | None, *, identity: tuple[int, int] | None) -> None:
    """Empty one of the sandbox's six folders, then move into it everything inside `source` (a
    staging folder on the same file system, made by the panel; None leaves the folder empty).
    The folder keeps its identity (the one recorded at create, checked here first), so the
    next start still finds the folder it approved. Everything goes through file descriptors
    opened without following links: nothing the sandbox left in the folder can redirect it."""
    _check_name(name)
    if folder not in FOLDERS and folder != HOME:
        raise WorkspaceError(f"{folder!r} is not one of a sandbox's folders.")
    root_fd = _open_root()
    try:
        try:
            base_fd = os.open(name, _DIR, dir_fd=root_fd)
        except OSError:
            raise WorkspaceError(f"The workspace folder {name}/ is missing or not a plain folder.") from None
        try:
            if _read_marker(base_fd) != uuid:
                raise WorkspaceError(f"The workspace folder {name}/ does not carry this sandbox's marker.")
            try:
                fd = os.open(folder, _DIR, dir_fd=base_fd)
            except OSError:
                raise WorkspaceError(f"{name}/{folder} is not a plain folder (a link?).") from None
            try:
                st = os.fstat(fd)
                if identity is not None and (st.st_dev, st.st_ino) != tuple(identity):
                    raise WorkspaceError(f"{name}/{folder} was replaced since the sandbox was created.")
                fdwalk.empty_folder(fd)
                if source is not None:
                    src_fd = policy.open_dir_nofollow(source, flags=os.O_RDONLY)
                    try:
                        for entry in os.listdir(src_fd):
                            os.rename(entry, entry, src_dir_fd=src_fd, dst_dir_fd=fd)
                    finally:
                        os.close(src_fd)
            finally:
                os.close(fd)
        finally:
            os.close(base_fd)
    finally:
        os.close(root_fd)
