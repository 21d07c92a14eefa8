"""Reading an archive: every header through _GuardedInfo, the manifest a line at a time, and
verify(), which checks every member against it."""

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, cast

from ._format import (
    BLOCK,
    FILES_CLOSE,
    FILES_OPEN,
    FORMAT,
    HEADER_BYTES,
    HEADER_CHAIN,
    MANIFEST,
    MAX_MANIFEST_LINE,
    SMALL_MANIFEST,
    SPARSE_SEGMENTS,
    Refused,
    _entry_line,
    sparse_digest,
)
from ._rules import Limits, _Budget, judge


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


def _content(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    """A regular member's content (tarfile has none to give for a folder, a device or a link
    whose target is not in the archive)."""
    source = tar.extractfile(member)
    if source is None:
        raise Refused(f"{member.name[:200]} is not a regular file.")
    return source


def _chunks(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[tuple[int, bytes]]:
    """(offset in the file, bytes) of a member's content as the archive stores it: a dense
    member from its start to its end, a sparse one segment by segment, its holes never read
    (tarfile's own reader would hand over every zero of them)."""
    segments = segments_of(member)
    if segments is None:
        source = _content(tar, member)
        position = 0
        while chunk := source.read(BLOCK):
            yield position, chunk
            position += len(chunk)
        return
    stream = cast(IO[bytes], tar.fileobj)  # tarfile.open always sets it (typeshed allows None)
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
    source = _content(tar, member)
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


def _members(tar: tarfile.TarFile, result: Checked, check: Callable[[Iterator[dict[str, Any]]], list[str]]) -> Iterator[tarfile.TarInfo]:
    """The archive's members, in order, but its manifest: that one (last, and only one, or
    Refused) is read into `result.manifest`, and what `check` finds in its listing joins
    `result.problems`."""
    for member in tar:
        tar.members = []  # type: ignore[attr-defined] # a stream is read once: tarfile's list of every member read would only grow
        if member.name == MANIFEST:
            if result.manifest is not None:
                raise Refused("The archive holds two manifests.")
            result.manifest, listed = _manifest(tar, member)
            result.problems += check(listed)
            continue
        if result.manifest is not None:
            raise Refused("Members follow the manifest: this is not an archive the panel wrote.")
        yield member


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
                for member in _members(tar, result, lambda listed: compare(listed, spool)):
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
