"""Writing an archive: a tar stream cut into gzip members compressed on a pool of threads,
written under a temporary name and renamed once complete."""

import errno
import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from sandboxes import fdwalk

from ._format import (
    _DIR_FLAGS,
    BLOCK,
    FILES_CLOSE,
    FILES_OPEN,
    FORMAT,
    MANIFEST,
    MAX_DEPTH,
    SPARSE_SEGMENTS,
    TICK,
    USTAR_SIZE,
    _entry_line,
    sparse_digest,
)
from ._rules import name_problem
from ._verify import _content, _open_tar


def _incompressible(block: bytes) -> bool:
    """Whether deflate would gain almost nothing on `block`, judged on three samples."""
    if len(block) < 16384:
        return False
    step = len(block) // 3
    for start in (0, step, 2 * step):
        sample = block[start : start + 8192]
        if len(zlib.compress(sample, 1)) < len(sample) * 0.97:
            return False
    return True


def _mode(mode: int) -> int:
    """Permission bits as archived: never setuid or setgid (a restore refuses those)."""
    return stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID)


def _gzip_member(block: bytes, level: int) -> bytes:
    if level and _incompressible(block):
        level = 0
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    return compressor.compress(block) + compressor.flush()


class _ParallelGzip(io.RawIOBase):
    """A write-only file object that gzips what it is given, a block per thread, in order. At
    most 2 blocks per thread are in flight, so memory stays bounded whatever the size."""

    def __init__(self, out: IO[bytes], *, level: int, workers: int):
        super().__init__()
        self.out = out
        self.level = level
        self.buffer = bytearray()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gzip")
        self.pending: deque[Future[bytes]] = deque()
        self.limit = 2 * workers
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.fed = 0
        self.abandoned = False

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        if self.abandoned:
            return len(data)  # the archive was given up: whatever still flushes goes nowhere
        self.buffer += data
        self.fed += len(data)
        while len(self.buffer) >= BLOCK:
            self._submit(bytes(self.buffer[:BLOCK]))
            del self.buffer[:BLOCK]
        return len(data)

    def _submit(self, block: bytes) -> None:
        self.pending.append(self.pool.submit(_gzip_member, block, self.level))
        while len(self.pending) > self.limit:
            self._drain_one()

    def _drain_one(self) -> None:
        data = self.pending.popleft().result()
        self.out.write(data)
        self.sha256.update(data)
        self.size += len(data)

    def finish(self) -> None:
        if self.buffer or not self.fed:
            self._submit(bytes(self.buffer))
            self.buffer.clear()
        while self.pending:
            self._drain_one()
        self.pool.shutdown()

    def abandon(self) -> None:
        self.abandoned = True
        for future in self.pending:
            future.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Exact(io.RawIOBase):
    """Reads exactly `size` bytes through `read`, hashing them. A file that shrank while it was
    read is padded with zeros and one that grew is cut, so that the tar header stays true and
    the manifest says exactly what was archived."""

    def __init__(self, read: Callable[[int], bytes], size: int):
        super().__init__()
        self._read = read
        self.left = size
        self.sha256 = hashlib.sha256()
        self.unreadable = False
        self.tick: Callable[[int], None] | None = None  # told of every read (ArchiveWriter._tick)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        try:
            data = self._read(n)
        except OSError:
            self.unreadable = True  # an I/O error half-way: the rest is zeros, and the manifest says so
            data = b""
        data = data or b"\0" * n
        self.left -= len(data)
        self.sha256.update(data)
        if self.tick is not None:
            self.tick(len(data))
        return data


class _SparseReader(io.RawIOBase):
    """A sparse member's content as GNU sparse 1.0 stores it: the map (`head`), then the bytes
    of each data segment read from `fd`, hashed. Like _Exact, a file that shrank while it was
    read gives zeros, so that the sizes in the header stay true."""

    def __init__(self, fd: int, head: bytes, segments: list[tuple[int, int]]):
        super().__init__()
        self.fd = fd
        self.head = head
        self.segments = deque(segments)
        self.position = self.left = 0
        self.sha256 = hashlib.sha256()
        self.unreadable = False
        self.tick: Callable[[int], None] | None = None

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        n = BLOCK if n is None or n < 0 else n
        out = bytearray(self.head[:n])
        self.head = self.head[n:]
        while len(out) < n:  # tarfile wants every read whole
            while not self.left:
                if not self.segments:
                    return bytes(out)
                self.position, self.left = self.segments.popleft()
            want = min(n - len(out), self.left)
            try:
                data = os.pread(self.fd, want, self.position)
            except OSError:
                self.unreadable = True
                data = b""
            data = data or bytes(want)
            self.sha256.update(data)
            self.position += len(data)
            self.left -= len(data)
            out += data
            if self.tick is not None:
                self.tick(len(data))
        return bytes(out)


def _sparse_head(segments: list[tuple[int, int]], size: int) -> bytes:
    """A GNU sparse 1.0 map: the number of entries, then each offset and length, a line each,
    padded to a block; ended, as GNU tar ends it, by an empty segment at the end of the file."""
    listed = segments if segments and sum(segments[-1]) == size else [*segments, (size, 0)]
    head = b"%d\n" % len(listed) + b"".join(b"%d\n%d\n" % pair for pair in listed)
    return head + bytes(-len(head) % tarfile.BLOCKSIZE)


# The most bytes of holes that merging a sparse file's map may turn into zeros to read, beyond
# four times its data: past it the file is left out of the archive (and named in the manifest).
SPARSE_ZEROS_MOST = 1 << 30


class TooCutUp(Exception):
    """data_segments: a sparse file cut into so many pieces that bounding its map would mean
    reading terabytes of its holes as zeros."""


def data_segments(fd: int, size: int) -> list[tuple[int, int]] | None:
    """Where a file with holes holds data, as [(offset, length)] (SEEK_DATA/SEEK_HOLE), or None
    when it is better read whole: no holes, or a file system that cannot say. Holes too short to
    matter are merged into the data around them (archived as zeros), so that however the file is
    cut up, the map stays under SPARSE_SEGMENTS and memory stays flat. TooCutUp when that would
    read more than SPARSE_ZEROS_MOST (and four times the data) of holes: 131,072 blocks of 4 KB
    spread over 16 TB (512 MB of data) merged into one segment of 16 TB of zeros, read for
    hours (the evidence archive has no cap)."""
    found: list[list[int]] = []
    gap = 0
    position = 0
    data = 0  # bytes the file really holds
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size) if start < size else size
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break  # nothing but a hole from here to the end
            return None
        if start >= size:
            break
        data += end - start
        if found and start - found[-1][1] <= gap:
            found[-1][1] = end
        else:
            found.append([start, end])
        while len(found) >= SPARSE_SEGMENTS:
            gap = max(2 * gap, 1 << 16)
            found = _merged(found, gap)
            zeros = sum(e - s for s, e in found) - data
            if zeros > max(SPARSE_ZEROS_MOST, 4 * data):
                raise TooCutUp(f"a sparse file cut into too many pieces: archiving it would read {zeros} bytes of its holes")
        position = end
    if found == [[0, size]]:
        return None
    return [(start, end - start) for start, end in found]


def _merged(found: list[list[int]], gap: int) -> list[list[int]]:
    out = [found[0]]
    for start, end in found[1:]:
        if start - out[-1][1] <= gap:
            out[-1][1] = end
        else:
            out.append([start, end])
    return out


T = TypeVar("T")


def _opened(part: T | None) -> T:
    """One of an ArchiveWriter's parts (its file, spool, gzip stream or tar), which only its
    `with` block holds open."""
    if part is None:
        raise RuntimeError("The archive writer is used outside its `with` block, or after commit().")
    return part


@dataclass
class Progress:
    files: int = 0
    bytes: int = 0


def _shown(skipped: list[str]) -> list[str]:
    return skipped.shown() if isinstance(skipped, fdwalk.Noted) else list(skipped)


class ArchiveWriter:
    """Write one archive to `final_path`, atomically. Use as a context manager: leaving the
    block with an exception removes the temporary file; `commit()` makes it the real one.

    `progress(files, bytes)` is called after each member (the caller throttles its writes)."""

    def __init__(self, final_path: str, *, level: int = 6, workers: int | None = None, progress: Callable[[int, int], None] | None = None):
        self.final_path = final_path
        self.folder = os.path.dirname(final_path) or "."
        self.tmp_path = partial_path(final_path)
        self.level = level
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.progress = progress
        self._reading = 0  # bytes of the member being added, read so far
        self._since_tick = 0
        self.count = 0
        self.skipped: list[str] = fdwalk.Noted()
        self._spool: IO[bytes] | None = None  # one entry per line: memory stays flat whatever the count
        self.done = Progress()
        self._file: IO[bytes] | None = None
        self._gzip: _ParallelGzip | None = None
        self._tar: tarfile.TarFile | None = None

    def __enter__(self) -> "ArchiveWriter":
        remove_partial(self.tmp_path)  # left by a worker that died: this run starts over
        fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)
        self._spool = tempfile.TemporaryFile(dir=self.folder)
        self._gzip = _ParallelGzip(self._file, level=self.level, workers=self.workers)
        self._tar = tarfile.open(fileobj=self._gzip, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._file is not None:
            self.abort()
        self.close_spool()

    # members ----------------------------------------------------------------------------------

    def _info(self, path: str, kind: bytes, mode: int, mtime: float, size: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(path)
        info.type = kind
        info.mode = _mode(mode)
        info.mtime = int(mtime)
        info.size = size
        info.uid = info.gid = 1000
        info.uname = info.gname = ""
        return info

    def _added(self, entry: dict[str, Any], size: int = 0) -> None:
        spool, tar = _opened(self._spool), _opened(self._tar)
        spool.write(_entry_line(entry) + b"\n")
        tar.members = []  # type: ignore[attr-defined] # tarfile keeps every member it wrote: memory would grow with the count
        self.count += 1
        self.done.files += 1
        self.done.bytes += size
        self._reading = 0
        if self.progress:
            self.progress(self.done.files, self.done.bytes)

    def _tick(self, n: int) -> None:
        """Within one large file, progress every TICK bytes too: a cancel, a cap or the read
        rate (the caller's callback) then holds inside a file of any size, not only between
        files."""
        self._reading += n
        self._since_tick += n
        if self.progress and self._since_tick >= TICK:
            self._since_tick = 0
            self.progress(self.done.files, self.done.bytes + self._reading)

    def add_dir(self, path: str, *, mode: int, mtime: float) -> None:
        tar = _opened(self._tar)
        tar.addfile(self._info(path, tarfile.DIRTYPE, mode, mtime))
        self._added({"path": path, "type": "dir", "mode": _mode(mode)})

    def add_symlink(self, path: str, target: str, *, mode: int = 0o777, mtime: float) -> None:
        tar = _opened(self._tar)
        info = self._info(path, tarfile.SYMTYPE, mode, mtime)
        info.linkname = target
        tar.addfile(info)
        self._added({"path": path, "type": "symlink", "target": target})

    def add_hardlink(self, path: str, target: str, *, mode: int, mtime: float, size: int = 0) -> None:
        """A hard link to `target`, archived before it. `size`: its file's data, counted in what
        the archive unpacks to (a restore makes the link a copy), though none is read."""
        tar = _opened(self._tar)
        info = self._info(path, tarfile.LNKTYPE, mode, mtime)
        info.linkname = target
        tar.addfile(info)
        self._added({"path": path, "type": "hardlink", "target": target}, size)

    def add_file_fd(self, path: str, fd: int, *, size: int, mode: int, mtime: float) -> str:
        """Add `size` bytes read from `fd`; returns their sha256."""
        tar = _opened(self._tar)
        reader = _Exact(lambda n: os.read(fd, n), size)
        reader.tick = self._tick
        tar.addfile(self._info(path, tarfile.REGTYPE, mode, mtime, size), reader)
        digest = reader.sha256.hexdigest()
        if reader.unreadable:
            self.skipped.append(f"{path} (could not be read to its end; the rest is zeros)")
        self._added({"path": path, "type": "file", "size": size, "mode": _mode(mode), "sha256": digest}, size)
        return digest

    def add_sparse_fd(self, path: str, fd: int, *, size: int, segments: list[tuple[int, int]], mode: int, mtime: float) -> str:
        """Add a file with holes in GNU sparse format 1.0: its map, then only the bytes of its
        data `segments` (see data_segments). Returns the sha256 of those bytes."""
        tar = _opened(self._tar)
        head = _sparse_head(segments, size)
        data = sum(length for _offset, length in segments)
        stored = len(head) + data
        reader = _SparseReader(fd, head, segments)
        reader.tick = self._tick
        # A short made-up name: tarfile adds no "path" record that would win over the real name.
        info = self._info(f"GNUSparseFile.0/{self.count}", tarfile.REGTYPE, mode, mtime, stored)
        # Past 8 GiB the stored size goes in a "size" record, which must come before the real size.
        info.pax_headers = {
            **({"size": str(stored)} if stored >= USTAR_SIZE else {}),
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": path,
            "GNU.sparse.realsize": str(size),
        }
        tar.addfile(info, reader)
        digest = reader.sha256.hexdigest()
        if reader.unreadable:
            self.skipped.append(f"{path} (could not be read to its end; the rest is zeros)")
        entry = {"path": path, "type": "file", "size": size, "mode": _mode(mode), "sha256": digest, "sparse": sparse_digest(segments)}
        self._added(entry, data)
        return digest

    def add_file_stream(self, path: str, stream: IO[bytes], *, size: int, mode: int, mtime: float) -> str:
        """Add a member whose content comes from another archive's stream."""
        tar = _opened(self._tar)
        hasher = _Exact(stream.read, size)
        tar.addfile(self._info(path, tarfile.REGTYPE, mode, mtime, size), hasher)
        digest = hasher.sha256.hexdigest()
        self._added({"path": path, "type": "file", "size": size, "mode": _mode(mode), "sha256": digest}, size)
        return digest

    def add_bytes(self, path: str, data: bytes, *, mode: int = 0o644, mtime: float) -> str:
        return self.add_file_stream(path, io.BytesIO(data), size=len(data), mode=mode, mtime=mtime)

    # the end ----------------------------------------------------------------------------------

    def commit(self, manifest: dict[str, Any], *, mtime: float) -> tuple[int, str]:
        """Write the manifest last, finish the file, flush it to disk and give it its final
        name. Returns (the archive's size, its sha256)."""
        tar, gzip_out, file, spool = _opened(self._tar), _opened(self._gzip), _opened(self._file), _opened(self._spool)
        with tempfile.TemporaryFile(dir=self.folder) as body:
            _write_manifest(body, dict(manifest, format=FORMAT, skipped=_shown(self.skipped), count=self.count), spool)
            info = self._info(MANIFEST, tarfile.REGTYPE, 0o644, mtime, body.tell())
            body.seek(0)
            tar.addfile(info, body)
        tar.close()
        gzip_out.finish()
        file.flush()
        os.fsync(file.fileno())
        file.close()
        self._file = None
        os.rename(self.tmp_path, self.final_path)
        fsync_dir(self.folder)
        return gzip_out.size, gzip_out.sha256.hexdigest()

    def entries(self) -> Iterator[dict[str, Any]]:
        """What was archived, in order (read back from the spool)."""
        spool = _opened(self._spool)
        spool.seek(0)
        for line in spool:
            yield json.loads(line)

    def abort(self) -> None:
        if self._gzip is not None:
            self._gzip.abandon()
        if self._tar is not None:
            self._tar.closed = True  # type: ignore[attr-defined]  # nothing more is written, not even by its finaliser
            self._tar.fileobj.closed = True  # type: ignore[union-attr,attr-defined]
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # a full disk fails the flush too; the file goes anyway
            self._file = None
        remove_partial(self.tmp_path)

    def close_spool(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _write_manifest(out: IO[bytes], head: dict[str, Any], spool: IO[bytes]) -> None:
    """The manifest as JSON whose "files" come last, one entry a line: a reader can take it a
    line at a time, whatever the number of files."""
    text = json.dumps(head, sort_keys=True, separators=(",", ":")).encode()
    out.write(text[:-1] + FILES_OPEN)
    spool.seek(0)
    first = True
    for line in spool:
        out.write((b"" if first else b",\n") + line.rstrip(b"\n"))
        first = False
    out.write((b"" if first else b"\n") + FILES_CLOSE)


def partial_path(final_path: str) -> str:
    """Where the archive for `final_path` is written until it is complete."""
    folder, name = os.path.split(final_path)
    return os.path.join(folder or ".", f".{name}.partial")


def remove_partial(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def add_tree(writer: ArchiveWriter, dir_fd: int, prefix: str) -> None:
    """Add everything under the open folder `dir_fd` as `prefix/...`: folders, regular files
    and symbolic links (as links, never followed), walked with one descriptor per level (see
    sandboxes.fdwalk). Sockets, FIFOs, devices and names that are not UTF-8 (a restore refuses
    them) are skipped and named in the manifest. Takes ownership of `dir_fd`."""
    st = os.fstat(dir_fd)
    writer.add_dir(prefix, mode=st.st_mode, mtime=st.st_mtime)
    walk = fdwalk.Walk(dir_fd, prefix, sort=True, max_depth=MAX_DEPTH)
    linked: dict[tuple[int, int], str] = {}  # (device, inode) of a file with links -> where it was archived
    for parent, name, path, st in walk:
        if problem := name_problem(path):
            writer.skipped.append(f"{fdwalk.display_name(path)!r}: {problem}")  # a restore would refuse it
            walk.prune()
            continue
        # What the agent can change under the walk (an entry removed, swapped for a link or a
        # FIFO) makes that entry skipped, never the backup fail. Errors writing the archive
        # (a full disk) are not caught here: they end the backup.
        if stat.S_ISDIR(st.st_mode):
            writer.add_dir(path, mode=st.st_mode, mtime=st.st_mtime)
        elif stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(name, dir_fd=parent)
            except OSError:
                writer.skipped.append(path)
                continue
            writer.add_symlink(path, target, mtime=st.st_mtime)
        elif stat.S_ISREG(st.st_mode):
            _add_regular(writer, parent, name, path, linked)
        else:
            writer.skipped.append(path)
    writer.skipped += walk.skipped


# The most files with several links one add_tree remembers (each its path: up to 4 KB deep
# down, so at most some 80 MB); past it, further ones are archived as copies (still within the
# backup's byte cap).
MAX_LINKED = 20_000


def _add_regular(writer: ArchiveWriter, dir_fd: int, name: str, path: str, linked: dict[tuple[int, int], str]) -> None:
    """A regular file; a further name of a file already archived in this tree (a hard link) is
    archived as a link to it, not as another copy: a file of the quota's size linked 10,000
    times would otherwise make an archive, and a read, of 10,000 times the quota (the evidence
    archive has no byte cap). A restore makes the link a copy again, counted against its byte
    limit (and is counted as that copy in what the backup unpacks to)."""
    # O_NONBLOCK: a FIFO swapped in after the scan cannot hang the open; fstat judges what opened.
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        writer.skipped.append(path)  # gone, or swapped for a link, since the listing
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            writer.skipped.append(path)
            return
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in linked:
            # Counted as the copy a restore makes of it (the restore's room for staging is what
            # the backup unpacks to), but neither read nor written again.
            writer.add_hardlink(path, linked[key], mode=st.st_mode, mtime=st.st_mtime, size=min(st.st_blocks * 512, st.st_size))
            return
        # Fewer blocks than bytes: there may be holes, and the file is archived without them.
        try:
            segments = data_segments(fd, st.st_size) if st.st_blocks * 512 < st.st_size else None
        except TooCutUp as exc:
            writer.skipped.append(f"{path} ({exc})")
            return
        if segments is None:
            writer.add_file_fd(path, fd, size=st.st_size, mode=st.st_mode, mtime=st.st_mtime)
        else:
            writer.add_sparse_fd(path, fd, size=st.st_size, segments=segments, mode=st.st_mode, mtime=st.st_mtime)
        if st.st_nlink > 1 and len(linked) < MAX_LINKED:
            linked[key] = path
    finally:
        os.close(fd)


class _Collect:
    """A write-only file object whose writes a generator hands on."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> list[bytes]:
        out, self.chunks = self.chunks, []
        return out


def tar_stream_of_folder(src: str, *, uid: int, gid: int) -> Iterator[bytes]:
    """An uncompressed tar of what the folder `src` holds (a staging folder the panel made),
    owned by uid:gid, walked without recursion, produced as it is sent (never a file on disk)."""
    sink = _Collect()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for parent, name, path, st in fdwalk.Walk(os.open(src, _DIR_FLAGS), "", sort=True):
            info = tarfile.TarInfo(path)
            info.uid, info.gid, info.mtime, info.mode = uid, gid, int(st.st_mtime), stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=parent)
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
                with os.fdopen(fd, "rb") as source:
                    info.size = os.fstat(fd).st_size
                    tar.addfile(info, source)
            yield from sink.take()
    yield from sink.take()


class ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (the engine's archive stream)."""

    def __init__(self, chunks: Iterable[bytes]):
        super().__init__()
        self.chunks: Iterator[bytes] = iter(chunks)
        self.rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self.rest:
            try:
                self.rest = next(self.chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self.rest))
        buffer[:n] = self.rest[:n]
        self.rest = self.rest[n:]
        return n


def add_engine_tar(writer: ArchiveWriter, stream: IO[bytes], prefix: str) -> None:
    """Copy an archive the engine produced (`docker cp` of a folder: its members are named
    <folder>/...) into the backup as `prefix/...`, hashing every file. Hard links stay links to
    the renamed member; devices and FIFOs are skipped."""
    kept: set[str] = set()  # regular files archived: the only targets a hard link may keep
    with _open_tar(stream) as tar:
        for member in tar:
            tar.members = []  # type: ignore[attr-defined] # read once: keep no list of every member
            first, _, rest = member.name.strip("/").partition("/")
            path = f"{prefix}/{rest}" if rest else prefix
            if problem := name_problem(path):
                writer.skipped.append(f"{fdwalk.display_name(path)!r}: {problem}")
                continue
            if member.isdir():
                writer.add_dir(path, mode=member.mode, mtime=member.mtime)
            elif member.issym():
                writer.add_symlink(path, member.linkname, mtime=member.mtime)
            elif member.islnk():
                _first, _, target = member.linkname.strip("/").partition("/")
                if f"{prefix}/{target}" in kept:
                    writer.add_hardlink(path, f"{prefix}/{target}", mode=member.mode, mtime=member.mtime)
                else:
                    writer.skipped.append(f"{path} (a hard link to something that is not a file kept)")
            elif member.isreg():
                writer.add_file_stream(path, _content(tar, member), size=member.size, mode=member.mode, mtime=member.mtime)
                kept.add(path)
            else:
                writer.skipped.append(path)
