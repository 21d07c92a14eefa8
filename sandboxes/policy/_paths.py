"""Paths judged lexically (roots, names, targets), then on disk: every component opened with
O_NOFOLLOW from / down, and each bind source's identity checked against what is forbidden."""

import errno
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._spec import CONTAINER_PATHS, DOCKER_SOCKETS, EXTRA_TARGET_PARENTS, IMAGE_RE, NAME_RE, SYSTEM_PATHS, ContainerSpec, Rules

# --- paths, lexically ----------------------------------------------------------------------------


def is_within(path: str, root: str) -> bool:
    """`path` is `root` or lies inside it (both absolute and normalised)."""
    return path == root or root == "/" or path.startswith(root.rstrip("/") + "/")


def overlaps(a: str, b: str) -> bool:
    """One of the two folders is, contains or lies inside the other."""
    return is_within(a, b) or is_within(b, a)


def is_normalised(path: str) -> bool:
    return path.startswith("/") and os.path.normpath(path) == path and not path.startswith("//")


def check_name(name: str) -> list[str]:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        return ["Name: use 1-40 lower-case letters, digits or hyphens, starting and ending with a letter or digit."]
    return []


def check_image_ref(image: str) -> list[str]:
    if not isinstance(image, str) or len(image) > 255 or not IMAGE_RE.fullmatch(image) or "//" in image or ".." in image:
        return [f"Image: {str(image)[:80]!r} is not a valid image reference."]
    return []


def check_container_path(target: str) -> list[str]:
    """An extra mount's target: normalised, absolute, strictly inside /workspace/ or /mnt/."""
    if not isinstance(target, str) or "\x00" in target or not is_normalised(target):
        return [f"Mount target {target!r} must be a normalised absolute path (no '..', '.', '//' or trailing '/')."]
    if not any(is_within(target, p) and target != p for p in EXTRA_TARGET_PARENTS):
        return [f"Mount target {target} must be inside /workspace/ or /mnt/."]
    return []


def check_extra_source_lexically(source: str, rules: Rules) -> list[str]:
    """Where an extra mount's source may lie, judged on the path as written."""
    if not isinstance(source, str) or "\x00" in source or not is_normalised(source):
        return [f"Mount source {source!r} must be a normalised absolute path."]
    if not rules.mount_roots:
        return [f"Mount source {source}: extra mounts are off (no SANDBOX_MOUNT_ROOTS are configured)."]
    if overlaps(source, rules.workspace_root):
        return [f"Mount source {source} is, contains or lies inside the workspace root {rules.workspace_root}."]
    for protected in (*SYSTEM_PATHS, *DOCKER_SOCKETS):
        if overlaps(source, protected):
            return [f"Mount source {source} is, contains or lies inside the system path {protected}."]
    for protected in CONTAINER_PATHS:
        if is_within(protected, source):
            return [f"Mount source {source} is or contains {protected}."]
    for protected in rules.protected:
        if overlaps(source, protected):
            return [f"Mount source {source} is, contains or lies inside the panel's own {protected}."]
    for home in rules.homes:
        if home != "/" and overlaps(source, home):
            return [f"Mount source {source} is, contains or lies inside the home directory {home}."]
    if not any(is_within(source, r) for r in rules.mount_roots):
        return [f"Mount source {source} is outside the allowed folders ({', '.join(rules.mount_roots)})."]
    return []


def real_homes(homes: Iterable[str]) -> list[str]:
    """Home directories as they really are (a home reached through a link is judged at its target)."""
    found = []
    for home in homes:
        if home and os.path.isabs(home):
            for form in {os.path.normpath(home), os.path.realpath(home)}:
                if form != "/" and form not in found:
                    found.append(form)
    return found


def check_mount_roots(roots: Sequence[str], *, workspace_root: str, homes: Iterable[str], protected: Iterable[str] = ()) -> list[str]:
    """Problems with the configured SANDBOX_MOUNT_ROOTS: a root may not be, contain or lie inside
    a system path, a home directory (from the password database, resolved), the workspace root
    or the panel's own folders (its code, virtualenv and var/)."""
    problems = []
    homes = real_homes(homes)
    protected = list(protected)
    for root in roots:
        if not is_normalised(root) or root == "/":
            problems.append(f"SANDBOX_MOUNT_ROOTS: {root!r} must be a normalised absolute path other than /.")
            continue
        reasons = [f"the system path {p}" for p in (*SYSTEM_PATHS, *DOCKER_SOCKETS) if overlaps(root, p)]
        reasons += [f"{p}" for p in CONTAINER_PATHS if p != "/" and is_within(p, root)]
        reasons += [f"the home directory {h}" for h in homes if overlaps(root, os.path.normpath(h))]
        if overlaps(root, workspace_root):
            reasons.append(f"the workspace root {workspace_root}")
        reasons += [f"the panel's own {p}" for p in protected if overlaps(root, p)]
        if reasons:
            problems.append(
                f"SANDBOX_MOUNT_ROOTS: {root} is, contains or lies inside {reasons[0]}; name a folder of its own for sandboxes to share."
            )
    return problems


def check_workspace_root(root: str, *, homes: Iterable[str]) -> list[str]:
    """Problems with WORKSPACE_ROOT: it may lie inside a home directory (the default is
    ~/ClaudeCodeWorkspace) but may not be or contain a system path or anyone's home."""
    if not is_normalised(root):
        return [f"WORKSPACE_ROOT: {root!r} must be a normalised absolute path."]
    inside = [p for p in (*SYSTEM_PATHS, *DOCKER_SOCKETS, *CONTAINER_PATHS) if is_within(p, root)]
    inside += [h for h in real_homes(homes) if is_within(h, root)]
    if inside:
        return [f"WORKSPACE_ROOT: {root} is or contains {inside[0]}; name a folder of its own for the sandboxes."]
    return []


# --- paths, on disk ------------------------------------------------------------------------------


class HostPathError(Exception):
    """A host folder that may not be mounted as it is on disk now."""


def open_dir_nofollow(path: str, *, flags: int = os.O_PATH) -> int:
    """Open the directory `path` component by component from /, never following a symbolic
    link (O_NOFOLLOW at every step). Returns the fd (the caller closes it)."""
    if not is_normalised(path):
        raise HostPathError(f"{path!r} is not a normalised absolute path.")
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    walked = ""
    try:
        parts = [p for p in path.split("/") if p]
        for i, part in enumerate(parts):
            walked += "/" + part
            last = i == len(parts) - 1
            try:
                nxt = os.open(part, (flags if last else os.O_PATH) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise HostPathError(_describe(walked, part, fd, exc)) from None
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def _describe(walked: str, part: str, parent_fd: int, exc: OSError) -> str:
    try:
        st = os.lstat(part, dir_fd=parent_fd)
    except OSError:
        return f"{walked} does not exist."
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(part, dir_fd=parent_fd)
        except OSError:
            target = "?"
        return f"{walked} is a symbolic link (to {target}); links are never mounted."
    if not stat.S_ISDIR(st.st_mode):
        return f"{walked} is not a folder."
    if exc.errno == errno.EACCES:
        return f"{walked} cannot be read by the panel."
    return f"{walked}: {exc.strerror}."


def _root_of(path: str, roots: Iterable[str]) -> str | None:
    """The deepest of `roots` that `path` lies inside."""
    inside = [r for r in roots if is_within(path, r)]
    return max(inside, key=len) if inside else None


def dir_chain(path: str, *, root: str | None = None, trusted_uids: Iterable[int] = (0,)) -> tuple[tuple[int, int], ...]:
    """(device, inode) of every folder from / down to `path`, walked without following any link.

    With `root` (the allowed root `path` lies in), also judge who could swap the folder between
    this check and Docker's mount: every folder from `root` down to the parent of `path` must be
    owned by one of `trusted_uids` and writable by its owner only, and no folder above `root` may
    be writable by its group or others, unless it is sticky (like /tmp) and both it and the
    entry on the way belong to `trusted_uids`: then nobody else may rename that entry. Raises
    HostPathError saying which folder fails."""
    fd = open_dir_nofollow("/")
    chain = []
    try:
        st = os.fstat(fd)
        chain.append((st.st_dev, st.st_ino))
        walked = ""
        trusted = set(trusted_uids)
        for part in [p for p in path.split("/") if p]:
            parent, parent_st = walked or "/", st
            walked += "/" + part
            try:
                nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise HostPathError(_describe(walked, part, fd, exc)) from None
            os.close(fd)
            fd = nxt
            st = os.fstat(fd)
            if root is not None:
                _judge_parent(parent, parent_st, st, below_root=is_within(parent, root), trusted=trusted)
            chain.append((st.st_dev, st.st_ino))
        return tuple(chain)
    finally:
        os.close(fd)


def _judge_parent(path: str, st: os.stat_result, child: os.stat_result, *, below_root: bool, trusted: set[int]) -> None:
    if below_root and st.st_uid not in trusted:
        raise HostPathError(
            f"{path} belongs to uid {st.st_uid}, who could swap a folder inside it between the check "
            "and Docker's mount; folders on the way to a mount must belong to root or the panel."
        )
    if st.st_mode & 0o022:
        # The sticky bit lets only an entry's owner (or the folder's) rename it: safe when both are trusted.
        if st.st_mode & stat.S_ISVTX and st.st_uid in trusted and child.st_uid in trusted:
            return
        raise HostPathError(
            f"{path} is writable by its group or by others, who could swap a folder inside it "
            "for a link between the check and Docker's mount; make it writable by its owner only."
        )


def dir_identity(path: str) -> tuple[int, int]:
    """(device, inode) of the folder `path`, reached without following any link."""
    return dir_chain(path)[-1]


@dataclass(frozen=True)
class MountEntry:
    point: str  # where it is mounted
    root: str  # which folder of its file system it shows
    device: str  # major:minor of that file system


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """Every mount of this machine. Raises HostPathError if that cannot be read: the checks that
    need it must not pass for want of it."""
    try:
        with open(path) as f:
            return [MountEntry(_unescape(fields[4]), _unescape(fields[3]), fields[2]) for fields in (line.split() for line in f)]
    except (OSError, IndexError) as exc:
        raise HostPathError(f"the list of mounts ({path}) cannot be read: {exc}") from None


def _unescape(field_text: str) -> str:
    """mountinfo writes a space as \\040, a tab as \\011, a backslash as \\134."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def check_single_name(source: str, mounts: list[MountEntry]) -> list[str]:
    """An extra mount's folder must have one name only. A file system mounted twice, or a bind
    mount of a folder, makes a second path to the same folder, which the checks by name cannot
    see through: refused when another mount of the same file system also shows this folder. (A
    btrfs subvolume mounted at /, which shows a sub-folder of its file system, is one name.)"""
    inside = [m for m in mounts if is_within(source, m.point)]
    if not inside:
        return []
    on = max(inside, key=lambda m: len(m.point))
    rest = source[len(on.point) :].lstrip("/") if on.point != "/" else source.lstrip("/")
    folder = os.path.normpath(on.root.rstrip("/") + "/" + rest) if rest else on.root
    for other in mounts:
        if other is not on and other.device == on.device and is_within(folder, other.root):
            alias = os.path.normpath(other.point.rstrip("/") + "/" + folder[len(other.root) :].lstrip("/"))
            return [
                f"Mount source {source} is the same folder as {alias} (its file system is mounted twice); "
                "one folder may have one name only."
            ]
    return []


def forbidden_chains(rules: Rules) -> list[tuple[str, tuple[tuple[int, int], ...], bool]]:
    """(label, chain, whether only containing it is refused) for every folder an extra mount may
    never be, contain or lie inside, judged by identity: system folders, homes, the panel's own
    folders and Docker's, the workspace. Folders that do not exist are left out."""
    found = []
    for label, paths, contain_only in (
        ("the system path", (*SYSTEM_PATHS,), False),
        ("the home directory", rules.homes, False),
        ("the panel's own", rules.protected, False),
        ("the workspace root", (rules.workspace_root,), False),
        ("", CONTAINER_PATHS, True),
    ):
        for path in paths:
            try:
                found.append((f"{label} {path}".strip(), dir_chain(path), contain_only))
            except HostPathError:
                continue
    return found


def check_identity_against(source: str, chain: Sequence[Sequence[int]], forbidden) -> list[str]:
    """The source, by identity, against forbidden_chains(): a second name for a home or a system
    folder is refused like the folder itself."""
    ids = {tuple(x) for x in chain}
    for label, other, contain_only in forbidden:
        contains = tuple(chain[-1]) in {tuple(x) for x in other}
        inside = tuple(other[-1]) in ids
        if contains or (inside and not contain_only):
            return [f"Mount source {source} is, contains or lies inside {label} (under another name)."]
    return []


def check_host_paths(spec: ContainerSpec, rules: Rules) -> list[str]:
    """Judge every bind source as it is on disk now (see the module docstring): no link on the
    way, nobody but root or the panel able to swap it, no bind mount under it, and every folder
    from / down to it the very one recorded when the sandbox was created."""
    problems: list[str] = []
    extra = [b for b in spec.binds if not b.workspace]
    try:
        mounts = read_mountinfo() if extra else []
        forbidden = forbidden_chains(rules) if extra else []
    except HostPathError as exc:
        return [f"Extra mounts cannot be judged: {exc}"]
    for bind in (*spec.binds, *(v.as_bind() for v in spec.volumes if v.device)):
        root = rules.workspace_root if bind.workspace else _root_of(bind.source, rules.mount_roots)
        try:
            chain = dir_chain(bind.source, root=root, trusted_uids=rules.trusted_uids)
        except HostPathError as exc:
            problems.append(f"Mount source {bind.source} cannot be mounted: {exc}")
            continue
        if not bind.workspace:
            problems += check_single_name(bind.source, mounts)
            problems += check_identity_against(bind.source, chain, forbidden)
        if not bind.chain:
            problems.append(f"Mount source {bind.source} has no recorded identity; it was never checked at create.")
        elif tuple(map(tuple, bind.chain)) != chain:
            was, now = bind.chain[-1], chain[-1]
            problems.append(
                f"Mount source {bind.source} (or a folder on its way) was replaced since the sandbox was "
                f"created (device/inode {was[0]}/{was[1]}, now {now[0]}/{now[1]})."
            )
    return problems
