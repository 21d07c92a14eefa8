"""Backup archives: written fast and atomically, checked against their manifest, taken apart
safely. No Django, no Docker: paths, file objects and plain values in and out.

    <name>-YYYYMMDD-HHMMSS.tar.gz
        workspace/<Folder>/...   the six folders, read on the host without following a link
        home/...                 the home volume, as the engine hands it over
        manifest.json            last: the sandbox's config, and every member's type, size,
                                 mode and sha256

A file with holes (`truncate -s 16T f`) is archived in GNU sparse format 1.0, as `tar --sparse`
writes it: a PAX header naming it and its full size, then its map of data segments and only
their bytes, so that it costs what its data costs (tar and Python list and extract it as usual).
Its manifest entry's `sha256` is the hash of those data segments, in order, and its `sparse` the
hash of the map ("offset length" a line, empty segments left out): together they fix the whole
content without reading terabytes of zeros, and verify and restore check the same two.

Writing. The tar stream is cut into 1 MB blocks, and each block becomes one gzip member,
compressed on a pool of threads (zlib lets go of the GIL while it works), written in order: a
multi-member gzip file, which gzip, `tar xzf` and Python all read as one. A block that does not
compress (media, git packs, archives) is stored instead of being squeezed for nothing. The file
is written under a temporary name in the same folder, flushed to disk, then renamed: a crash or
a full disk leaves no file under the final name.

Reading for a restore. Nothing is extracted in place: every member is judged first (tarfile's
`data` filter, and stricter rules on top: no absolute path, no `..`, no link leaving its area,
no hard link but to a file already extracted, no device or FIFO, no setuid or setgid bit, only
UTF-8 names, member and byte limits), and written only inside a fresh folder that the caller
made, through file descriptors opened without following links. Symbolic links are made last,
once no later member can be written through them. The byte limit counts what lands on disk: a
sparse file's data (its holes stay holes, its full size bounded on its own) and a hard link's
copy; the staging disk's free space is watched while it fills.

Reading anything. tarfile takes an extended header (PAX, GNU long name or link) into memory
whole, and a sparse map number by number, at whatever size the archive declares: a 1 MB upload
declaring a 1 GiB PAX record took a worker to 3.2 GB. Every archive is read through
_GuardedInfo, which judges those sizes from the raw header before tarfile reads a byte of them.
"""

import errno
import gzip
import hashlib
import io
import json
import os
import posixpath
import stat
import tarfile
import tempfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from sandboxes import fdwalk

FORMAT = 1
MANIFEST = "manifest.json"
WORKSPACE = "workspace"
HOME = "home"
BLOCK = 1 << 20
_ZEROS = bytes(BLOCK)
TICK = 4 << 20
NAME_BYTES = 4096  # the longest path a backup holds (and a restore takes)
MAX_DEPTH = 512  # folders deeper than this are left out of a backup (and named in its manifest)
HEADER_BYTES = 64 << 10  # the largest extended header (PAX records, a GNU long name or link) read
HEADER_CHAIN = 8  # extended headers in a row before one member
SPARSE_SEGMENTS = 1 << 16  # data segments in one sparse file's map (a few MB as Python tuples)
FILE_BYTES = 1 << 44  # the largest file a restore makes, holes included (16 TiB)
USTAR_SIZE = 8**11  # a member stored past this has its size in a PAX record
SPACE_EVERY = 64 << 20  # a restore looks at the free space again after writing this much
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ArchiveError(Exception):
    """An archive that cannot be written, read or trusted; the message says why."""


class Refused(ArchiveError):
    """An archive whose contents a restore refuses (hostile or broken); nothing was written
    outside the temporary folder."""


class NoSpace(ArchiveError):
    """The disk a restore is staged on is (nearly) full: the archive may be fine, the machine
    cannot take it now."""


# --- writing ------------------------------------------------------------------------------------


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


def sparse_digest(segments: Iterable[tuple[int, int]]) -> str:
    """The sha256 a manifest records for a sparse file's map: one "offset length" line for each
    data segment, empty ones left out (GNU tar ends its maps with one)."""
    digest = hashlib.sha256()
    for offset, length in segments:
        if length:
            digest.update(b"%d %d\n" % (offset, length))
    return digest.hexdigest()


def _sparse_head(segments: list[tuple[int, int]], size: int) -> bytes:
    """A GNU sparse 1.0 map: the number of entries, then each offset and length, a line each,
    padded to a block; ended, as GNU tar ends it, by an empty segment at the end of the file."""
    listed = segments if segments and sum(segments[-1]) == size else [*segments, (size, 0)]
    head = b"%d\n" % len(listed) + b"".join(b"%d\n%d\n" % pair for pair in listed)
    return head + bytes(-len(head) % tarfile.BLOCKSIZE)


def data_segments(fd: int, size: int) -> list[tuple[int, int]] | None:
    """Where a file with holes holds data, as [(offset, length)] (SEEK_DATA/SEEK_HOLE), or None
    when it is better read whole: no holes, or a file system that cannot say. Holes too short to
    matter are merged into the data around them (archived as zeros), so that however the file is
    cut up, the map stays under SPARSE_SEGMENTS and memory stays flat."""
    found: list[list[int]] = []
    gap = 0
    position = 0
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
        if found and start - found[-1][1] <= gap:
            found[-1][1] = end
        else:
            found.append([start, end])
        while len(found) >= SPARSE_SEGMENTS:
            gap = max(2 * gap, 1 << 16)
            found = _merged(found, gap)
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


@dataclass
class Progress:
    files: int = 0
    bytes: int = 0


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
        self.skipped: list[str] = []
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
        assert self._spool is not None and self._tar is not None
        self._spool.write(_entry_line(entry) + b"\n")
        self._tar.members = []  # type: ignore[attr-defined] # tarfile keeps every member it wrote: memory would grow with the count
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
        assert self._tar is not None
        self._tar.addfile(self._info(path, tarfile.DIRTYPE, mode, mtime))
        self._added({"path": path, "type": "dir", "mode": _mode(mode)})

    def add_symlink(self, path: str, target: str, *, mode: int = 0o777, mtime: float) -> None:
        assert self._tar is not None
        info = self._info(path, tarfile.SYMTYPE, mode, mtime)
        info.linkname = target
        self._tar.addfile(info)
        self._added({"path": path, "type": "symlink", "target": target})

    def add_hardlink(self, path: str, target: str, *, mode: int, mtime: float) -> None:
        assert self._tar is not None
        info = self._info(path, tarfile.LNKTYPE, mode, mtime)
        info.linkname = target
        self._tar.addfile(info)
        self._added({"path": path, "type": "hardlink", "target": target})

    def add_file_fd(self, path: str, fd: int, *, size: int, mode: int, mtime: float) -> str:
        """Add `size` bytes read from `fd`; returns their sha256."""
        assert self._tar is not None
        reader = _Exact(lambda n: os.read(fd, n), size)
        reader.tick = self._tick
        self._tar.addfile(self._info(path, tarfile.REGTYPE, mode, mtime, size), reader)
        digest = reader.sha256.hexdigest()
        if reader.unreadable:
            self.skipped.append(f"{path} (could not be read to its end; the rest is zeros)")
        self._added({"path": path, "type": "file", "size": size, "mode": _mode(mode), "sha256": digest}, size)
        return digest

    def add_sparse_fd(self, path: str, fd: int, *, size: int, segments: list[tuple[int, int]], mode: int, mtime: float) -> str:
        """Add a file with holes in GNU sparse format 1.0: its map, then only the bytes of its
        data `segments` (see data_segments). Returns the sha256 of those bytes."""
        assert self._tar is not None
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
        self._tar.addfile(info, reader)
        digest = reader.sha256.hexdigest()
        if reader.unreadable:
            self.skipped.append(f"{path} (could not be read to its end; the rest is zeros)")
        entry = {"path": path, "type": "file", "size": size, "mode": _mode(mode), "sha256": digest, "sparse": sparse_digest(segments)}
        self._added(entry, data)
        return digest

    def add_file_stream(self, path: str, stream: IO[bytes], *, size: int, mode: int, mtime: float) -> str:
        """Add a member whose content comes from another archive's stream."""
        assert self._tar is not None
        hasher = _Exact(stream.read, size)
        self._tar.addfile(self._info(path, tarfile.REGTYPE, mode, mtime, size), hasher)
        digest = hasher.sha256.hexdigest()
        self._added({"path": path, "type": "file", "size": size, "mode": _mode(mode), "sha256": digest}, size)
        return digest

    def add_bytes(self, path: str, data: bytes, *, mode: int = 0o644, mtime: float) -> str:
        return self.add_file_stream(path, io.BytesIO(data), size=len(data), mode=mode, mtime=mtime)

    # the end ----------------------------------------------------------------------------------

    def commit(self, manifest: dict[str, Any], *, mtime: float) -> tuple[int, str]:
        """Write the manifest last, finish the file, flush it to disk and give it its final
        name. Returns (the archive's size, its sha256)."""
        assert self._tar is not None and self._gzip is not None and self._file is not None and self._spool is not None
        with tempfile.TemporaryFile(dir=self.folder) as body:
            _write_manifest(body, dict(manifest, format=FORMAT, skipped=self.skipped, count=self.count), self._spool)
            info = self._info(MANIFEST, tarfile.REGTYPE, 0o644, mtime, body.tell())
            body.seek(0)
            self._tar.addfile(info, body)
        self._tar.close()
        self._gzip.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.rename(self.tmp_path, self.final_path)
        fsync_dir(self.folder)
        return self._gzip.size, self._gzip.sha256.hexdigest()

    def entries(self) -> Iterator[dict[str, Any]]:
        """What was archived, in order (read back from the spool)."""
        assert self._spool is not None
        self._spool.seek(0)
        for line in self._spool:
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


FILES_OPEN = b',"files":[\n'
FILES_CLOSE = b"]}\n"
SMALL_MANIFEST = 8 << 20  # read whole; larger ones are read a line at a time
MAX_MANIFEST_LINE = 1 << 20


def _entry_line(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()


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
            _add_regular(writer, parent, name, path)
        else:
            writer.skipped.append(path)
    writer.skipped += walk.skipped


def _add_regular(writer: ArchiveWriter, dir_fd: int, name: str, path: str) -> None:
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
        # Fewer blocks than bytes: there may be holes, and the file is archived without them.
        segments = data_segments(fd, st.st_size) if st.st_blocks * 512 < st.st_size else None
        if segments is None:
            writer.add_file_fd(path, fd, size=st.st_size, mode=st.st_mode, mtime=st.st_mtime)
        else:
            writer.add_sparse_fd(path, fd, size=st.st_size, segments=segments, mode=st.st_mode, mtime=st.st_mtime)
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
                source = tar.extractfile(member)
                assert source is not None
                writer.add_file_stream(path, source, size=member.size, mode=member.mode, mtime=member.mtime)
                kept.add(path)
            else:
                writer.skipped.append(path)


# --- reading ------------------------------------------------------------------------------------


class _HashingFile(io.RawIOBase):
    """Reads a file, hashing every byte that goes by (the archive's own sha256)."""

    def __init__(self, raw: IO[bytes]):
        super().__init__()
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self.count += n
        return n or 0


@dataclass
class Checked:
    """What a walk through an archive found."""

    manifest: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    sha256: str = ""
    dropped: list[str] = field(default_factory=list)
    outside_links: int = 0  # judged (an import): links a restore refuses unless told to leave them out
    outside_example: str = ""
    sizes: dict[str, int] = field(default_factory=dict)  # extracted: each area's files' full sizes, holes included

    @property
    def ok(self) -> bool:
        return not self.problems and self.manifest is not None


def _number(text: object) -> int | None:
    return int(text) if isinstance(text, str) and text.isdigit() and len(text) <= 20 else None


_XGLTYPE = tarfile.XGLTYPE  # in _GuardedInfo, `tarfile` is the archive (named as tarfile names it)


class _GuardedInfo(tarfile.TarInfo):
    """tarfile's member header, with what it declares judged before tarfile reads it: an
    extended header above HEADER_BYTES, more than HEADER_CHAIN of them in a row, global headers
    adding up past HEADER_BYTES, a sparse map past SPARSE_SEGMENTS or outside its member, and
    the older sparse formats (which the panel never writes) are refused, none of them read.
    tarfile itself parses the 512-byte header blocks, so there is no second reading of the
    stream to disagree with it; streams (gzip) work as files do."""

    _sparse_end = 0  # where the next header starts after a sparse member (its stored size)
    _sparse_size = 0  # the sparse file's own size, holes included

    @classmethod
    def fromtarfile(cls, tarfile):  # type: ignore[no-untyped-def]
        # Each extended header reads the next header from inside itself: count the depth.
        depth = getattr(tarfile, "_ccpanel_chain", 0)
        if depth > HEADER_CHAIN:
            raise Refused(f"A member has more than {HEADER_CHAIN} extended headers in a row.")
        setattr(tarfile, "_ccpanel_chain", depth + 1)  # noqa: B010 - TarFile declares no such attribute
        try:
            return super().fromtarfile(tarfile)
        finally:
            setattr(tarfile, "_ccpanel_chain", depth)  # noqa: B010

    def _extended(self, tarfile) -> None:  # type: ignore[no-untyped-def]
        if not 0 <= self.size <= HEADER_BYTES:
            raise Refused(
                f"A member's extended header (a PAX record, a GNU long name or link) declares {self.size} bytes; "
                f"at most {HEADER_BYTES} are read."
            )

    def _proc_gnulong(self, tarfile):  # type: ignore[no-untyped-def]
        self._extended(tarfile)
        return super()._proc_gnulong(tarfile)  # type: ignore[misc]

    def _proc_pax(self, tarfile):  # type: ignore[no-untyped-def]
        self._extended(tarfile)
        if self.type == _XGLTYPE:  # kept for every later member: they must add up to little
            seen = getattr(tarfile, "_ccpanel_global", 0) + self.size
            if seen > HEADER_BYTES:
                raise Refused(f"The archive's global headers add up to more than {HEADER_BYTES} bytes.")
            setattr(tarfile, "_ccpanel_global", seen)  # noqa: B010
        member = super()._proc_pax(tarfile)  # type: ignore[misc]
        if member.sparse is not None:
            # tarfile's own arithmetic is wrong for a sparse member with a "size" record: ours holds.
            tarfile.offset = member._sparse_end
            member.size = member._sparse_size
        return member

    def _proc_sparse(self, tarfile):  # type: ignore[no-untyped-def]
        raise Refused(f"{self.name[:200]} is in the old GNU sparse format, which the panel does not read.")

    def _proc_gnusparse_00(self, next, pax_headers, buf):  # type: ignore[no-untyped-def]
        raise Refused("A member is in GNU sparse format 0.0, which the panel does not read.")

    def _proc_gnusparse_01(self, next, pax_headers):  # type: ignore[no-untyped-def]
        raise Refused("A member is in GNU sparse format 0.1, which the panel does not read.")

    def _proc_gnusparse_10(self, next, pax_headers, tarfile):  # type: ignore[no-untyped-def]
        """GNU sparse 1.0, the format the writer uses: the map heads the member's data. Read a
        block at a time within its bounds, and checked whole: segments in order, inside the
        file, their bytes inside the member."""
        stored = _number(pax_headers["size"]) if "size" in pax_headers else next.size
        size = _number(pax_headers.get("GNU.sparse.realsize"))
        if not next.isreg() or stored is None or size is None:
            raise Refused("A sparse member's header is not one the panel writes.")
        end = next.offset_data + next._block(stored)
        numbers = _read_sparse_map(tarfile.fileobj, room=stored)
        next.offset_data = tarfile.fileobj.tell()
        next.sparse = list(zip(numbers[::2], numbers[1::2], strict=True))
        _check_segments(next.sparse, size=size, room=end - next.offset_data)
        next._sparse_end, next._sparse_size = end, size


def _read_sparse_map(fileobj: IO[bytes], *, room: int) -> list[int]:
    """The numbers of a GNU sparse 1.0 map after its count: offset and length of each segment."""
    numbers: list[int] = []
    count: int | None = None
    buf, used = b"", 0
    while count is None or len(numbers) < 2 * count:
        line, newline, rest = buf.partition(b"\n")
        if not newline:
            if len(buf) > 20 or used + tarfile.BLOCKSIZE > room:
                raise Refused("A sparse member's map is broken or larger than the member.")
            block = fileobj.read(tarfile.BLOCKSIZE)
            if len(block) < tarfile.BLOCKSIZE:
                raise Refused("The archive ends inside a sparse member's map.")
            buf, used = buf + block, used + len(block)
            continue
        buf = rest
        if not line.isdigit() or len(line) > 20:
            raise Refused("A sparse member's map is broken.")
        if count is None:
            count = int(line)
            if count > SPARSE_SEGMENTS + 1:
                raise Refused(f"A sparse member's map lists more than {SPARSE_SEGMENTS} segments.")
        else:
            numbers.append(int(line))
    return numbers


def _check_segments(segments: list[tuple[int, int]], *, size: int, room: int) -> None:
    position = total = 0
    for offset, length in segments:
        if offset < position or offset + length > size:
            raise Refused("A sparse member's segments overlap, go backwards or lie past its end.")
        position = offset + length
        total += length
    if total > room:
        raise Refused("A sparse member's segments hold more bytes than the member.")


def _open_tar(fileobj: IO[bytes]) -> tarfile.TarFile:
    """A tar stream read through _GuardedInfo (the first header is read here already)."""
    return tarfile.open(fileobj=fileobj, mode="r|", encoding="utf-8", errors="surrogateescape", tarinfo=_GuardedInfo)  # type: ignore[call-overload]


def _open_members(raw: IO[bytes]) -> tarfile.TarFile:
    return _open_tar(gzip.GzipFile(fileobj=raw, mode="rb"))  # type: ignore[arg-type]


def segments_of(member: tarfile.TarInfo) -> list[tuple[int, int]] | None:
    """A sparse member's map, [(offset, length)] (checked by _GuardedInfo); None for others."""
    return member.sparse  # type: ignore[return-value] # typeshed calls it bytes; tarfile makes a list of pairs


def data_bytes(member: tarfile.TarInfo) -> int:
    """What a regular member stores: a sparse one's data segments, any other's whole size."""
    segments = segments_of(member)
    return sum(length for _offset, length in segments) if segments is not None else member.size


def _chunks(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[tuple[int, bytes]]:
    """(offset in the file, bytes) of a member's content as the archive stores it: a dense
    member from its start to its end, a sparse one segment by segment, its holes never read
    (tarfile's own reader would hand over every zero of them)."""
    segments = segments_of(member)
    if segments is None:
        source = tar.extractfile(member)
        assert source is not None
        position = 0
        while chunk := source.read(BLOCK):
            yield position, chunk
            position += len(chunk)
        return
    stream = tar.fileobj
    assert stream is not None
    stream.seek(member.offset_data)  # forward only, in a stream: where the map ended
    for offset, length in segments:
        while length > 0:
            chunk = stream.read(min(BLOCK, length))
            if not chunk:
                raise Refused("The archive ends inside a sparse member.")
            yield offset, chunk
            offset += len(chunk)
            length -= len(chunk)


def _hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    digest = hashlib.sha256()
    for _offset, chunk in _chunks(tar, member):
        digest.update(chunk)
    return digest.hexdigest()


def _entry_of(member: tarfile.TarInfo, digest: str | None) -> dict[str, Any]:
    name = member.name.rstrip("/")
    if member.isdir():
        return {"path": name, "type": "dir", "mode": stat.S_IMODE(member.mode)}
    if member.issym():
        return {"path": name, "type": "symlink", "target": member.linkname}
    if member.islnk():
        return {"path": name, "type": "hardlink", "target": member.linkname}
    entry = {"path": name, "type": "file", "size": member.size, "mode": stat.S_IMODE(member.mode), "sha256": digest}
    if (segments := segments_of(member)) is not None:
        entry["sparse"] = sparse_digest(segments)
    return entry


def _manifest(tar: tarfile.TarFile, member: tarfile.TarInfo, *, limit: int = 1 << 30) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """(the manifest without its files, an iterator over its files). A small manifest is read
    whole (any layout); a large one only in the layout the writer uses, a line at a time."""
    if not member.isreg() or member.sparse is not None or member.size > limit:
        raise Refused("The manifest is not a regular file of a sensible size.")
    source = tar.extractfile(member)
    assert source is not None
    if member.size <= SMALL_MANIFEST:
        try:
            whole = json.loads(source.read())
        except (ValueError, RecursionError) as exc:
            raise Refused(f"The manifest is not valid JSON ({exc}).") from None
        if not isinstance(whole, dict) or not isinstance(whole.get("files"), list):
            raise Refused("The manifest is not one this panel wrote (unknown format).")
        listed = whole.pop("files")
        return _checked_head(whole), iter(listed)
    first = source.readline(MAX_MANIFEST_LINE)
    if not first.endswith(FILES_OPEN) or not first.startswith(b"{"):
        raise Refused("The manifest is not one this panel wrote (unknown layout).")
    try:
        head = json.loads(first[: -len(FILES_OPEN)] + b"}")
    except (ValueError, RecursionError):
        raise Refused("The manifest is not one this panel wrote (unknown layout).") from None

    def files() -> Iterator[dict[str, Any]]:
        while line := source.readline(MAX_MANIFEST_LINE):
            if line == FILES_CLOSE:
                return
            try:
                entry = json.loads(line.rstrip(b"\n").rstrip(b","))
            except (ValueError, RecursionError):
                raise Refused("The manifest is not one this panel wrote (a line is not an entry).") from None
            if not isinstance(entry, dict):
                raise Refused("The manifest is not one this panel wrote (a line is not an entry).")
            yield entry
        raise Refused("The manifest ends early.")

    return _checked_head(head), files()


def _checked_head(head: Any) -> dict[str, Any]:
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise Refused("The manifest is not one this panel wrote (unknown format).")
    return head


def compare(listed: Iterator[dict[str, Any]], computed: IO[bytes], *, left_out: frozenset[str] = frozenset(), most: int = 20) -> list[str]:
    """Differences between what the manifest lists and what the archive holds (spooled one
    entry a line, in the archive's order, which is the manifest's)."""
    problems: list[str] = []
    computed.seek(0)
    found_entries = (json.loads(line) for line in computed)
    for entry in listed:
        if not isinstance(entry, dict):
            problems.append("The manifest holds something that is not an entry.")
            break
        path = str(entry.get("path", "")).rstrip("/")
        if path in left_out:
            continue
        entry = dict(entry, path=path)
        found = next(found_entries, None)
        if found is None:
            problems.append(f"{path} is listed in the manifest but missing from the archive.")
        elif found["path"] != path:
            problems.append(f"{found['path']} is in the archive where the manifest lists {path}.")
        elif found != entry:
            what = "content (sha256)" if found.get("sha256") != entry.get("sha256") else "type, size or mode"
            problems.append(f"{path} differs from the manifest: its {what}.")
        if len(problems) >= most:
            return problems
    for extra in found_entries:
        problems.append(f"{extra['path']} is in the archive but not in its manifest.")
        if len(problems) >= most:
            break
    return problems


def verify(path: str, *, limits: "Limits | None" = None, areas: tuple[str, ...] | None = None) -> Checked:
    """Re-read the archive: hash every member, compare with the manifest, and hash the file.
    Memory stays flat: what it finds is spooled to a temporary file beside the archive. With
    `limits` (an archive made elsewhere), one that a restore would refuse for its size fails;
    with `areas`, one that it would refuse for a member (judged by the restore's own rules)."""
    result = Checked()
    budget = _Budget(limits) if limits is not None else None
    judged = _Judged(areas) if areas is not None else None
    try:
        with open(path, "rb", buffering=0) as raw_file, tempfile.TemporaryFile(dir=os.path.dirname(path) or ".") as spool:
            raw = _HashingFile(raw_file)
            with _open_members(io.BufferedReader(raw, BLOCK)) as tar:
                for member in tar:
                    tar.members = []  # type: ignore[attr-defined] # a stream is read once: tarfile's list of every member read would only grow
                    if member.name == MANIFEST:
                        if result.manifest is not None:
                            raise Refused("The archive holds two manifests.")
                        result.manifest, listed = _manifest(tar, member)
                        result.problems += compare(listed, spool)
                        continue
                    if result.manifest is not None:
                        raise Refused("Members follow the manifest: this is not an archive the panel wrote.")
                    if budget is not None:
                        budget.member(member)
                        budget.add(data_bytes(member) if member.isreg() else 0)
                    if judged is not None:
                        judged.member(member, result)
                    digest = _hash_member(tar, member) if member.isreg() else None
                    spool.write(_entry_line(_entry_of(member, digest)) + b"\n")
                    result.files += 1
                    result.bytes += data_bytes(member) if member.isreg() else 0
            if judged is not None:
                judged.finish()
            while raw.read(BLOCK):
                pass  # anything after the tar's end still counts towards the file's hash
            result.sha256 = raw.sha256.hexdigest()
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        result.problems.append(f"The archive cannot be read to its end: {exc}.")
        return result
    except Refused as exc:
        result.problems.append(str(exc))
        return result
    if result.manifest is None:
        result.problems.append("The archive has no manifest.")
    return result


class _Judged:
    """A restore's rules for an archive that is read, not extracted (an import's check): each
    member's own (judge), then the one that needs the whole archive: no member is written
    through a link. Holds the folders and the links that stay inside, as the extractor does."""

    def __init__(self, areas: tuple[str, ...]):
        self.areas = areas
        self.dirs: set[str] = set()
        self.links: set[str] = set()

    def member(self, member: tarfile.TarInfo, result: Checked) -> None:
        _area, leaves = judge(member, self.areas)
        name = member.name.rstrip("/")
        parts = name.split("/")
        self.dirs.update("/".join(parts[: i + 1]) for i in range(len(parts) - (0 if member.isdir() else 1)))
        if leaves:
            result.outside_links += 1
            result.outside_example = result.outside_example or f"{name} -> {member.linkname[:200]}"
        elif member.issym():
            self.links.add(name)

    def finish(self) -> None:
        if through := self.links & self.dirs:
            raise Refused(f"{min(through)} is a link that other members would be written through.")


# --- safe extraction ------------------------------------------------------------------------------


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

    def _folder_fd(self, folder: str, *, make: bool) -> int:
        """A new fd of `folder` (relative to dest; made as needed), opened part by part
        without following links; the last one asked for is kept for the next member."""
        if self._cached is not None and self._cached[0] == folder:
            return os.dup(self._cached[1])
        fd = os.dup(self.root_fd)
        try:
            for part in folder.split("/") if folder else []:
                if make:
                    try:
                        os.mkdir(part, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except (NotADirectoryError, OSError) as exc:
                    if isinstance(exc, FileNotFoundError) and not make:
                        raise
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

    def _write(self, tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, mode: int) -> str:
        fd, last = self._parent_fd(name)
        try:
            out = os.open(last, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
        except OSError:
            raise Refused(f"{name} appears twice in the archive.") from None
        finally:
            os.close(fd)
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
        except (FileNotFoundError, Refused):
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
            dst_fd, dst_last = self._parent_fd(name)
            try:
                out = os.open(dst_last, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dst_fd)
            except OSError:
                raise Refused(f"{name} appears twice in the archive.") from None
            finally:
                os.close(dst_fd)
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
                for member in tar:
                    tar.members = []  # type: ignore[attr-defined] # a stream is read once: tarfile's list of every member read would only grow
                    if member.name == MANIFEST:
                        if result.manifest is not None:
                            raise Refused("The archive holds two manifests.")
                        result.manifest, listed = _manifest(tar, member)
                        left_out = frozenset(d.split(" -> ")[0] for d in extractor.dropped)
                        result.problems = compare(listed, spool, left_out=left_out)
                        continue
                    if result.manifest is not None:
                        raise Refused("Members follow the manifest: this is not an archive the panel wrote.")
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
