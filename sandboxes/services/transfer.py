"""Controlled file transfer, the original `manage.sh`'s imports/ and exports/: files go into a
sandbox only through imports/ (read-only inside it) and come out only from exports/.

Every path is walked from the folder down through file descriptors opened with O_NOFOLLOW, one
part at a time, so no name (`..`, an absolute path, a link the agent planted in exports/) can
reach outside the folder. Names are judged, never rewritten: one with a slash, `..`, NUL or a
control character is refused with the reason (and a new file's with a bidirectional control).
Uploads are written to a temporary file beside the target, flushed, then renamed; each transfer
is audited with the sha256 of what passed.
"""

import hashlib
import os
import stat
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from django.conf import settings

from controlpanel.names import bidi_problem
from controlpanel.uploads import TooLarge, copy_limited
from teams.permissions import Role, authorize

from .. import fdwalk, policy, workspace
from ..models import Sandbox
from .auditing import audit
from .errors import SandboxError
from .hosting import folders_problem

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
UPLOAD_FOLDER = "imports"
DOWNLOAD_FOLDER = "exports"


class TransferError(SandboxError):
    """A transfer refused or failed; the message says why."""


def check_name(name: str) -> str:
    """A single file name as given, or TransferError saying why it cannot be one."""
    if not isinstance(name, str) or not name:
        raise TransferError("A file name is needed.")
    if "\x00" in name:
        raise TransferError("A file name may not contain a NUL character.")
    if "/" in name or "\\" in name:
        raise TransferError(f"A file name may not contain a slash: {name[:100]!r}.")
    if name in (".", ".."):
        raise TransferError(f"{name!r} is not a file name.")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise TransferError("A file name may not contain control characters.")
    if len(name.encode("utf-8", "surrogateescape")) > 255:
        raise TransferError("A file name may be at most 255 bytes long.")
    return name


def check_new_name(name: str) -> str:
    """A name for a file the panel makes: check_name's rules, and no bidirectional control
    (a name already on disk is still reachable by what it is)."""
    name = check_name(name)
    if problem := bidi_problem(name, "A file name"):
        raise TransferError(problem)
    return name


def split_path(path: str) -> list[str]:
    """A relative path inside the folder as its parts, each a valid name; "" is the folder."""
    if not isinstance(path, str):
        raise TransferError("A path is needed.")
    if path.startswith("/"):
        raise TransferError("The path must be relative to the folder.")
    parts = [p for p in path.split("/") if p != ""]
    if len(parts) > 64:
        raise TransferError("The path is too deep.")
    return [check_name(p) for p in parts]


def _open_folder(sandbox: Sandbox, folder: str) -> int:
    try:
        return workspace.open_sandbox_folder(sandbox, folder, recorded=True)
    except workspace.FolderReplaced as exc:
        raise TransferError(f"{exc}; nothing is transferred.") from None
    except policy.HostPathError as exc:
        raise TransferError(f"The sandbox's {folder}/ folder cannot be used: {exc}") from None


def _walk(fd: int, parts: list[str]) -> int:
    """Open the folder `parts` below `fd` (which this closes), never following a link."""
    for part in parts:
        try:
            next_fd = os.open(part, _DIR, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            raise TransferError(f"{part!r} is not a folder here ({exc.strerror}).") from None
        os.close(fd)
        fd = next_fd
    return fd


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    is_link: bool
    size: int
    mtime: float


def list_folder(*, user, sandbox: Sandbox, folder: str, path: str = "", limit: int = 1000) -> list[Entry]:
    """What one folder (imports/ or exports/, or a folder inside) holds, folders first."""
    authorize(user, sandbox.team, Role.OPERATOR)
    if folder not in (UPLOAD_FOLDER, DOWNLOAD_FOLDER):
        raise TransferError("Only imports/ and exports/ are reachable.")
    fd = _walk(_open_folder(sandbox, folder), split_path(path))
    try:
        found = []
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                found.append(
                    Entry(fdwalk.display_name(entry.name), stat.S_ISDIR(st.st_mode), stat.S_ISLNK(st.st_mode), st.st_size, st.st_mtime)
                )
                if len(found) >= limit:
                    break
    finally:
        os.close(fd)
    return sorted(found, key=lambda e: (not e.is_dir, e.name.lower()))


def upload(*, actor, sandbox: Sandbox, name: str, source: IO[bytes], path: str = "", source_ip: str | None = None) -> str:
    """Write `source` as imports/<path>/<name> (replacing a file of that name), at most
    TRANSFER_MAX_UPLOAD_BYTES; returns its sha256."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    if problem := folders_problem(sandbox):
        raise TransferError(problem)
    name = check_new_name(name)
    parts = split_path(path)
    fd = _walk(_open_folder(sandbox, UPLOAD_FOLDER), parts)
    tmp = f".{name[:200]}.upload-{os.getpid()}-{time.monotonic_ns()}"
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
        try:
            if os.geteuid() == 0:
                os.fchown(out, settings.SANDBOX_UID, settings.SANDBOX_GID)
            size, sha256 = copy_limited(source, out, limit=settings.TRANSFER_MAX_UPLOAD_BYTES)
        except TooLarge as exc:
            raise TransferError(f"The file is {exc}.") from None
        finally:
            os.close(out)
        try:
            existing = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            raise TransferError(f"{name!r} exists and is not a file; it is left alone.")
        os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=fd)
        except FileNotFoundError:
            pass
        raise
    finally:
        os.close(fd)
    where = "/".join([UPLOAD_FOLDER, *parts, name])
    audit(actor, "transfer.upload", sandbox, {"path": where, "size": size, "sha256": sha256}, source_ip)
    return sha256


class _Fd:
    """A file descriptor closed exactly once, by the stream or, if it never ran, by close()."""

    def __init__(self, fd: int):
        self.fd = fd
        self.open = True

    def close(self) -> None:
        if self.open:
            self.open = False
            os.close(self.fd)


class Download:
    """A file or a folder (as a .tar.gz) of exports/, streamed and audited when it ends. Its
    close() (called by the response) releases the file even if the stream never started."""

    def __init__(self, name: str, is_archive: bool, chunks: Iterator[bytes], fd: _Fd):
        self.name, self.is_archive, self.chunks, self.fd = name, is_archive, chunks, fd

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def close(self) -> None:
        self.chunks.close()  # type: ignore[attr-defined]
        self.fd.close()


def download(*, actor, sandbox: Sandbox, path: str, source_ip: str | None = None) -> Download:
    """Open exports/<path> for streaming: a file as it is, a folder as a .tar.gz of what it
    holds (links kept as links, never followed; anything else skipped)."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    if problem := folders_problem(sandbox):
        raise TransferError(problem)
    parts = split_path(path)
    root = _open_folder(sandbox, DOWNLOAD_FOLDER)
    if not parts:
        return _folder_download(actor, sandbox, root, DOWNLOAD_FOLDER, [], source_ip)
    parent = _walk(root, parts[:-1])
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            raise TransferError(f"{path!r} cannot be read ({exc.strerror}; links are never followed).") from None
    finally:
        os.close(parent)
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        return _folder_download(actor, sandbox, fd, parts[-1], parts, source_ip)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise TransferError(f"{path!r} is not a regular file or folder.")
    os.set_blocking(fd, True)
    holder = _Fd(fd)
    return Download(parts[-1], False, _file_chunks(actor, sandbox, holder, "/".join([DOWNLOAD_FOLDER, *parts]), source_ip), holder)


def _file_chunks(actor, sandbox: Sandbox, holder: _Fd, where: str, source_ip: str | None) -> Iterator[bytes]:
    digest, size, complete = hashlib.sha256(), 0, False
    try:
        while chunk := os.read(holder.fd, 1 << 20):
            digest.update(chunk)
            size += len(chunk)
            yield chunk
        complete = True
    finally:
        holder.close()
        audit(
            actor,
            "transfer.download",
            sandbox,
            {"path": where, "size": size, "sha256": digest.hexdigest(), "complete": complete},
            source_ip,
        )


class _Pipe:
    """A write-only file object whose writes are collected for a generator to hand out."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> list[bytes]:
        out, self.chunks = self.chunks, []
        return out


def _folder_download(actor, sandbox: Sandbox, fd: int, name: str, parts: list[str], source_ip: str | None) -> Download:
    where = "/".join([DOWNLOAD_FOLDER, *parts]) + "/"
    holder = _Fd(os.dup(fd))
    os.close(fd)

    def chunks() -> Iterator[bytes]:
        digest, size, complete = hashlib.sha256(), 0, False
        pipe = _Pipe()
        try:
            with tarfile.open(fileobj=pipe, mode="w|gz", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                holder.open = False  # _members owns it from here
                for member, source in _members(holder.fd, name):
                    tar.addfile(member, source)
                    if source is not None:
                        source.close()
                    for chunk in pipe.take():
                        digest.update(chunk)
                        size += len(chunk)
                        yield chunk
            for chunk in pipe.take():
                digest.update(chunk)
                size += len(chunk)
                yield chunk
            complete = True
        finally:
            audit(
                actor,
                "transfer.download",
                sandbox,
                {"path": where, "archive": True, "size": size, "sha256": digest.hexdigest(), "complete": complete},
                source_ip,
            )

    return Download(f"{name}.tar.gz", True, chunks(), holder)


def _members(top_fd: int, top_name: str) -> Iterator[tuple[tarfile.TarInfo, "_Exact | None"]]:
    """Members for a folder's archive, walked by fd, one per level (takes ownership of `top_fd`)."""
    info = tarfile.TarInfo(top_name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(os.fstat(top_fd).st_mtime)
    yield info, None
    for parent, name, member, st in fdwalk.Walk(top_fd, top_name, sort=True):
        try:
            info = tarfile.TarInfo(member)
            info.mtime = int(st.st_mtime)
            if stat.S_ISDIR(st.st_mode):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                yield info, None
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=parent)
                yield info, None
            elif stat.S_ISREG(st.st_mode):
                file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
                fst = os.fstat(file_fd)
                if not stat.S_ISREG(fst.st_mode):
                    os.close(file_fd)
                    continue
                os.set_blocking(file_fd, True)
                info.size, info.mode = fst.st_size, stat.S_IMODE(fst.st_mode) & 0o755
                yield info, _Exact(file_fd, fst.st_size)
        except OSError:
            continue  # gone meanwhile, or unreadable: left out


class _Exact:
    """Exactly `size` bytes of a file (zeros if it shrank meanwhile), then closes it."""

    def __init__(self, fd: int, size: int):
        self.fd, self.left = fd, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = os.read(self.fd, n) if n else b""
        if not data and n:
            data = b"\0" * n
        self.left -= len(data)
        return data

    def close(self) -> None:
        os.close(self.fd)
