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

The package's modules, private behind this one (import `backups.archive`, not them):
    _format    names, limits and errors; the manifest's lines
    _writer    ArchiveWriter, add_tree, add_engine_tar, tar_stream_of_folder
    _verify    the guarded tar reader (_GuardedInfo), the manifest read back, verify()
    _rules     what a restore and an import's check take: Limits, names, judge()
    _extract   extract() into a fresh folder, manifest_only()
"""

from ._extract import extract, manifest_only
from ._format import HEADER_BYTES, HOME, MANIFEST, WORKSPACE, ArchiveError, NoSpace, Refused
from ._rules import Limits
from ._verify import Checked, verify
from ._writer import (
    ArchiveWriter,
    ChunkReader,
    add_engine_tar,
    add_tree,
    data_segments,
    fsync_dir,
    partial_path,
    remove_partial,
    tar_stream_of_folder,
)

__all__ = [
    "HEADER_BYTES",
    "HOME",
    "MANIFEST",
    "WORKSPACE",
    "ArchiveError",
    "ArchiveWriter",
    "Checked",
    "ChunkReader",
    "Limits",
    "NoSpace",
    "Refused",
    "add_engine_tar",
    "add_tree",
    "data_segments",
    "extract",
    "fsync_dir",
    "manifest_only",
    "partial_path",
    "remove_partial",
    "tar_stream_of_folder",
    "verify",
]
