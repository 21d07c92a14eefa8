"""The archive's format: its names, limits and errors, and how its manifest is written
line by line (shared by the writer, the verifier and the extractor)."""

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

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


# --- the manifest ---------------------------------------------------------------------------------


FILES_OPEN = b',"files":[\n'
FILES_CLOSE = b"]}\n"
SMALL_MANIFEST = 8 << 20  # read whole; larger ones are read a line at a time
MAX_MANIFEST_LINE = 1 << 20


def _entry_line(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()


def sparse_digest(segments: Iterable[tuple[int, int]]) -> str:
    """The sha256 a manifest records for a sparse file's map: one "offset length" line for each
    data segment, empty ones left out (GNU tar ends its maps with one)."""
    digest = hashlib.sha256()
    for offset, length in segments:
        if length:
            digest.update(b"%d %d\n" % (offset, length))
    return digest.hexdigest()
