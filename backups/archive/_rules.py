"""What a restore takes, and an import's check with it: limits, names, and each member judged
before anything is written."""

import posixpath
import stat
import tarfile
from dataclasses import dataclass

from ._format import FILE_BYTES, HOME, NAME_BYTES, WORKSPACE, Refused


@dataclass(frozen=True)
class Limits:
    members: int = 2_000_000
    bytes: int = 1 << 40  # what is written: files' data (not their holes) and hard links' copies
    name_bytes: int = NAME_BYTES
    file_bytes: int = FILE_BYTES  # one file's size, holes included
    min_free: int = 0  # bytes that must stay free on the disk a restore is staged on


class _Budget:
    """Counts members and bytes against Limits, refusing the first that goes past one."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.members = 0
        self.bytes = 0

    def member(self, member: tarfile.TarInfo) -> None:
        self.members += 1
        if self.members > self.limits.members:
            raise Refused(f"The archive holds more than {self.limits.members} members (the restore limit).")
        if len(member.name.encode("utf-8", "surrogateescape")) > self.limits.name_bytes:
            raise Refused(f"A member's name is longer than {self.limits.name_bytes} bytes.")
        if member.isreg() and member.size > self.limits.file_bytes:
            raise Refused(f"{member.name[:200]} is {member.size} bytes long; a restore makes no file over {self.limits.file_bytes}.")

    def add(self, n: int, *, why: str = "") -> None:
        self.bytes += n
        if self.bytes > self.limits.bytes:
            raise Refused(f"The archive holds more than {self.limits.bytes} bytes (the restore limit{why}).")


def name_problem(name: str, *, most: int = NAME_BYTES) -> str | None:
    """Why a path cannot be in a backup (the writer leaves it out, a restore refuses it), or
    None: not valid UTF-8, a control character, longer than `most` bytes or a part over 255."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return f"its name is not valid UTF-8 ({name.encode('utf-8', 'surrogateescape')[:80]!r})"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"its name holds a control character ({name[:80]!r})"
    if len(encoded) > most:
        return f"its path is longer than {most} bytes"
    if any(len(part.encode()) > 255 for part in name.split("/")):
        return "a part of its path is longer than 255 bytes"
    return None


def _check_name(name: str, areas: tuple[str, ...]) -> tuple[str, str]:
    """(area, path inside the area) of a member name, or Refused saying why not."""
    problem = name_problem(name.rstrip("/"), most=1 << 20)
    if problem:
        raise Refused(f"A member is refused: {problem}.")
    if name.startswith("/"):
        raise Refused(f"A member has an absolute path: {name[:200]}.")
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise Refused(f"A member's path holds '..', '.' or an empty part: {name[:200]}.")
    top = parts[0]
    if top == WORKSPACE and len(parts) >= 2 and f"{WORKSPACE}/{parts[1]}" in areas:
        return f"{WORKSPACE}/{parts[1]}", "/".join(parts[2:])
    if top == HOME and HOME in areas:
        return HOME, "/".join(parts[1:])
    raise Refused(f"A member lies outside the folders a backup holds: {name[:200]}.")


def _check_hardlink(name: str, area: str, target: str) -> None:
    """Refused unless a hard link's target, as the archive writes it, is a clean path in the
    link's own area (the only place a restore looks for it); said in the archive's terms, as
    tarfile's own check would name the path on this machine it resolved."""
    problem = name_problem(target, most=1 << 20)
    if problem:
        raise Refused(f"{name} is a hard link whose target is refused: {problem}.")
    parts = target.split("/")
    if target.startswith("/") or any(p in ("", ".", "..") for p in parts) or not target.startswith(area + "/"):
        raise Refused(f"{name} is a hard link to {target[:200]}, outside its folder {area}/.")


def judge(member: tarfile.TarInfo, areas: tuple[str, ...]) -> tuple[str, bool]:
    """What a restore checks of a member before writing anything, and an import checks too:
    (its area, whether it is a symbolic link leaving its folder), or Refused saying why not."""
    area, _inner = _check_name(member.name, areas)
    name = member.name.rstrip("/")
    if member.mode & (stat.S_ISUID | stat.S_ISGID):
        raise Refused(f"{name} has the setuid or setgid bit.")
    if member.ischr() or member.isblk() or member.isfifo() or not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
        raise Refused(f"{name} is a device, a FIFO or another special file.")
    if member.islnk():
        _check_hardlink(name, area, member.linkname.rstrip("/"))
    return area, member.issym() and not _link_stays_inside(name, member.linkname)


def _link_stays_inside(name: str, target: str) -> bool:
    """Whether a symbolic link at `name` pointing at `target` stays inside what it restores
    into: the workspace (its six folders together), or the home."""
    if not target or target.startswith("/") or "\x00" in target:
        return False
    top, _, inner = name.partition("/")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(inner), target))
    return top in (WORKSPACE, HOME) and joined != ".." and not joined.startswith("../")
