"""Safe extraction: members judged first, written only inside a fresh folder through file
descriptors opened without following links, symbolic links made last."""

import errno
import hashlib
import io
import os
import stat
import tarfile
import tempfile
import zlib
from typing import Any

from sandboxes import fdwalk

from ._format import _DIR_FLAGS, _ZEROS, BLOCK, MANIFEST, SPACE_EVERY, NoSpace, Refused, _entry_line
from ._rules import Limits, _Budget, judge
from ._verify import Checked, _chunks, _entry_of, _HashingFile, _manifest, _members, _open_members, compare, data_bytes


class _Extractor:
    """Writes the members of one archive under `dest` (a fresh folder), judging each first.

    What it keeps grows with the folders, not the files: the set of folders (made or on the
    way to a member), the links to make at the end and the folders' modes. A file that exists
    already (a name given twice) is found by O_EXCL, a path through something that is not a
    folder by O_DIRECTORY|O_NOFOLLOW."""

    def __init__(self, dest: str, *, areas: tuple[str, ...], limits: Limits, uid: int | None, gid: int | None, drop_outside_links: bool):
        self.dest = dest
        self.drop_outside_links = drop_outside_links
        self.dropped: list[str] = []
        self.areas = areas
        self.limits = limits
        self.owner = (uid, gid) if uid is not None and gid is not None else None
        self.root_fd = os.open(dest, _DIR_FLAGS)
        self.dirs: set[str] = set()
        self.symlinks: list[tuple[str, str]] = []
        self.dir_modes: list[tuple[str, int, int]] = []
        self.budget = _Budget(limits)
        self.sizes: dict[str, int] = {}  # area: its files' full sizes, holes included
        self.unchecked = 0  # bytes written since the free space was last looked at
        self._cached: tuple[str, int] | None = None  # (folder, fd): members come folder by folder
        try:
            self._check_space(self.root_fd)
        except BaseException:
            os.close(self.root_fd)
            raise

    @property
    def total(self) -> int:
        return self.budget.bytes

    def _check_space(self, fd: int) -> None:
        st = os.fstatvfs(fd)
        free = st.f_bavail * st.f_frsize
        if free < self.limits.min_free:
            raise NoSpace(
                f"only {free} bytes are free on the disk the restore is staged on, and {self.limits.min_free} must stay free; "
                "it stopped before changing anything."
            )

    def _pwrite(self, fd: int, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
        self.unchecked += len(data)
        if self.unchecked >= SPACE_EVERY:
            self.unchecked = 0
            self._check_space(fd)

    def close(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None
        os.close(self.root_fd)

    def left_out(self) -> frozenset[str]:
        """The names of the links left out so far (not written, so not compared)."""
        return frozenset(d.split(" -> ")[0] for d in self.dropped)

    def _folder_fd(self, folder: str, *, make: bool) -> int:
        """A new fd of `folder` (relative to dest; made as needed), opened part by part
        without following links; the last one asked for is kept for the next member."""
        if self._cached is not None and self._cached[0] == folder:
            return os.dup(self._cached[1])
        fd = os.dup(self.root_fd)
        try:
            for part in folder.split("/") if folder else []:
                try:
                    next_fd = fdwalk.open_dir(part, fd, make=make)
                except fdwalk.NotAFolder:
                    raise Refused(f"{folder} is not a folder in the archive (a file or a link is in the way).") from None
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        if self._cached is not None:
            os.close(self._cached[1])
        self._cached = (folder, os.dup(fd))
        return fd

    def _parent_fd(self, name: str, *, make: bool = True) -> tuple[int, str]:
        folder, _, last = name.rpartition("/")
        return self._folder_fd(folder, make=make), last

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict[str, Any] | None:
        """Judge and write one member; its entry (as a manifest lists it), or None if left out."""
        self.budget.member(member)
        if self.budget.members % 1000 == 0:
            self._check_space(self.root_fd)  # many small files fill a disk too
        area, leaves = judge(member, self.areas)
        name = member.name.rstrip("/")
        if leaves:
            if self.drop_outside_links:
                self.dropped.append(f"{name} -> {member.linkname[:200]}")
                return None
            raise Refused(
                f"{name} is a link that leaves its folder (to {member.linkname[:200]}). A link made inside the sandbox, "
                "such as a virtualenv's bin/python, can be left out: restore again with 'leave out links that point "
                "outside their folder'."
            )
        try:
            filtered = tarfile.data_filter(member, self.dest)
        except tarfile.FilterError as exc:  # its message names the staging folder: not repeated
            raise Refused(f"{name} is refused by tarfile's data filter ({type(exc).__name__}).") from None
        parts = name.split("/")
        self.dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        if member.issym():
            self.symlinks.append((name, member.linkname))
            return _entry_of(member, None)
        if member.islnk():
            self._hardlink(name, area, member)
            return _entry_of(member, None)
        if member.isreg():
            self.budget.add(data_bytes(member))
            self.sizes[area] = self.sizes.get(area, 0) + member.size
        if member.isdir():
            self._mkdir(name, filtered.mode if filtered.mode is not None else 0o755, int(member.mtime))
            return _entry_of(member, None)
        return _entry_of(member, self._write(tar, member, name, filtered.mode if filtered.mode is not None else 0o644))

    def _mkdir(self, name: str, mode: int, mtime: int) -> None:
        self.dirs.add(name)
        if name.count("/") == 0:
            return  # workspace/ or home/: the staging folder's own
        fd, last = self._parent_fd(name)
        try:
            try:
                os.mkdir(last, 0o700, dir_fd=fd)
            except FileExistsError:
                try:
                    os.close(os.open(last, _DIR_FLAGS, dir_fd=fd))  # made on the way to a member below it
                except OSError:
                    raise Refused(f"{name} appears twice in the archive (a folder and a file).") from None
        finally:
            os.close(fd)
        self.dir_modes.append((name, stat.S_IMODE(mode), mtime))

    def _create(self, name: str) -> int:
        """The new file `name`, opened for writing (0600): never one that exists, nor through a link."""
        fd, last = self._parent_fd(name)
        try:
            return os.open(last, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
        except OSError:
            raise Refused(f"{name} appears twice in the archive.") from None
        finally:
            os.close(fd)

    def _write(self, tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, mode: int) -> str:
        out = self._create(name)
        digest = hashlib.sha256()
        try:
            for offset, chunk in _chunks(tar, member):
                digest.update(chunk)
                if chunk != _ZEROS[: len(chunk)]:  # zeros are left a hole: a sparse file stays sparse
                    self._pwrite(out, chunk, offset)
            os.ftruncate(out, member.size)  # the holes at the end (the size was judged: at most file_bytes)
            if self.owner:
                os.fchown(out, *self.owner)
            os.fchmod(out, stat.S_IMODE(mode) & 0o777)
            os.utime(out, (member.mtime, member.mtime))
        finally:
            os.close(out)
        return digest.hexdigest()

    def _hardlink(self, name: str, area: str, member: tarfile.TarInfo) -> None:
        """A hard link becomes a copy of a regular file this archive already wrote, in the same
        area; anything else (a link out, a link to a symbolic link, to a folder, to a later
        member) is refused. Links are made only at the end, so a link's name finds nothing here.
        The copy counts against the byte limit like any file (40 links to one member would
        otherwise write 40 times what was counted), and keeps the holes of its source."""
        target = member.linkname.rstrip("/")  # judged already: a clean path in `area`
        refused = Refused(f"{name} is a hard link to {target[:200]}, which is not a file extracted before it in the same folder.")
        try:
            src_fd, src_last = self._parent_fd(target, make=False)
        except Refused:
            raise refused from None
        try:
            src = os.open(src_last, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_fd)
        except OSError:
            raise refused from None
        finally:
            os.close(src_fd)
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                raise refused
            out = self._create(name)
            try:
                self._copy_data(src, out)
                os.ftruncate(out, st.st_size)
                self.sizes[area] = self.sizes.get(area, 0) + st.st_size
                if self.owner:
                    os.fchown(out, *self.owner)
                os.fchmod(out, stat.S_IMODE(st.st_mode))
                os.utime(out, (st.st_mtime, st.st_mtime))
            finally:
                os.close(out)
        finally:
            os.close(src)

    def _copy_data(self, src: int, out: int) -> None:
        """Copy the data segments of `src` (a file this extractor wrote) to `out`, each counted
        before it is written; the holes between them stay holes."""
        position = 0
        while True:
            try:
                start = os.lseek(src, position, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    return  # a hole to the end
                raise
            end = os.lseek(src, start, os.SEEK_HOLE)
            while start < end:
                chunk = os.pread(src, min(BLOCK, end - start), start)
                if not chunk:
                    return
                self.budget.add(len(chunk), why="; a hard link counts as the copy it becomes")
                self._pwrite(out, chunk, start)
                start += len(chunk)
            position = end

    def finish(self) -> None:
        """Make the links (no member comes after them now), then set folders' modes."""
        for name, target in self.symlinks:
            if name in self.dirs:
                raise Refused(f"{name} is a link that other members would be written through.")
            fd, last = self._parent_fd(name)
            try:
                os.symlink(target, last, dir_fd=fd)
                if self.owner:
                    os.chown(last, *self.owner, dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                raise Refused(f"{name} appears twice in the archive.") from None
            finally:
                os.close(fd)
        for name, mode, mtime in reversed(self.dir_modes):
            fd, last = self._parent_fd(name)
            try:
                dfd = os.open(last, _DIR_FLAGS, dir_fd=fd)
                try:
                    if self.owner:
                        os.fchown(dfd, *self.owner)
                    os.fchmod(dfd, mode & 0o777 | 0o700)
                    os.utime(dfd, (mtime, mtime))
                finally:
                    os.close(dfd)
            finally:
                os.close(fd)


def extract(
    archive_path: str,
    dest: str,
    *,
    areas: tuple[str, ...],
    limits: Limits,
    uid: int | None = None,
    gid: int | None = None,
    drop_outside_links: bool = False,
) -> Checked:
    """Extract the archive under `dest` (an empty folder the caller made and removes) after
    judging each member; then check every file against the manifest. Raises Refused, with
    nothing written outside `dest`. With `drop_outside_links`, symbolic links that point outside
    their folder are left out (listed in `dropped`) instead of refusing the archive."""
    result = Checked()
    extractor = _Extractor(dest, areas=areas, limits=limits, uid=uid, gid=gid, drop_outside_links=drop_outside_links)
    try:
        # The entries found are spooled beside the staging folder's contents (an unnamed file).
        with open(archive_path, "rb", buffering=0) as raw_file, tempfile.TemporaryFile(dir=dest) as spool:
            raw = _HashingFile(raw_file)
            with _open_members(io.BufferedReader(raw, BLOCK)) as tar:
                for member in _members(tar, result, lambda listed: compare(listed, spool, left_out=extractor.left_out())):
                    entry = extractor.member(tar, member)
                    if entry is not None:
                        spool.write(_entry_line(entry) + b"\n")
                        result.files += 1
            extractor.finish()
            while raw.read(BLOCK):
                pass
            result.sha256 = raw.sha256.hexdigest()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace("the disk the restore is staged on is full; it stopped before changing anything.") from None
        raise Refused(f"The archive cannot be read to its end: {exc}.") from None
    except (EOFError, tarfile.TarError, zlib.error) as exc:
        raise Refused(f"The archive cannot be read to its end: {exc}.") from None
    finally:
        extractor.close()
    if result.manifest is None:
        raise Refused("The archive has no manifest.")
    if result.problems:
        raise Refused("The archive does not match its manifest: " + " ".join(result.problems[:5]))
    result.bytes = extractor.total
    result.sizes = extractor.sizes
    result.dropped = extractor.dropped
    return result


def manifest_only(path: str) -> dict[str, Any]:
    """The manifest of an archive, without its files (read to the end: it is the last member)."""
    with open(path, "rb") as raw, _open_members(raw) as tar:
        for member in tar:
            if member.name == MANIFEST:
                return _manifest(tar, member)[0]
    raise Refused("The archive has no manifest.")
