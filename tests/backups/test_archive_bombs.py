"""Archives built to exhaust a worker: headers that declare a gigabyte, hard links that multiply
what a restore writes, sparse maps that lie, a full disk. Each is refused quickly, in little
memory, with nothing written past the limits; and a file with holes is archived as one
(`truncate -s 16T`), listed and extracted by GNU tar, and restored with its holes."""

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from backups import archive
from tests.backups.helpers import gzip_member, gzipped_zeros, header_bomb, hostile_archive, member, raw_header
from tests.backups.test_archive import AREAS, CONFIG

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"pax": tarfile.XHDTYPE, "pax global": tarfile.XGLTYPE, "gnu long name": tarfile.GNUTYPE_LONGNAME, "gnu long link": b"K"}
MiB = 1 << 20


@pytest.fixture(scope="module")
def gigabyte() -> bytes:
    return gzipped_zeros(1 << 30)


# A fresh interpreter does the reading, so that its peak RSS is the reading's own. It reads its
# high-water mark from /proc (VmHWM, of its own memory since exec), not from getrusage: a process
# started from pytest carries pytest's peak in ru_maxrss (see tests.support.processes).
READER = """
import json, os, sys, time
from backups import archive
def peak_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
mode, path, dest = sys.argv[1:4]
rest = peak_kb()
started = time.monotonic()
try:
    if mode == "verify":
        error = " ".join(archive.verify(path).problems)
    elif mode == "manifest":
        archive.manifest_only(path)
        error = ""
    else:
        os.mkdir(dest)
        archive.extract(path, dest, areas=("workspace/Projects", "home"), limits=archive.Limits())
        error = ""
except archive.ArchiveError as exc:
    error = str(exc)
print(json.dumps({"seconds": time.monotonic() - started, "error": error,
                  "grew_mb": (peak_kb() - rest) / 1024}))
"""


def read_in_subprocess(mode: str, path: Path, dest: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="controlpanel.settings.test")
    done = subprocess.run([sys.executable, "-c", READER, mode, str(path), str(dest)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("mode", ["extract", "verify", "manifest"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_header_declaring_a_gigabyte_is_refused_at_once_in_little_memory(kind, mode, gigabyte, tmp_path):
    path = tmp_path / "bomb.tar.gz"
    header_bomb(path, KINDS[kind], gigabyte)
    assert path.stat().st_size < 2 * MiB  # what an upload would weigh
    dest = tmp_path / "staging"
    found = read_in_subprocess(mode, path, dest)
    assert f"declares {1 << 30} bytes; at most {archive.HEADER_BYTES} are read" in found["error"]
    assert found["seconds"] < 1, found
    assert found["grew_mb"] < 100, found  # tarfile alone: 2 GB and 12 s for the PAX one
    assert not dest.exists() or list(dest.iterdir()) == []


def test_a_long_chain_of_small_extended_headers_is_refused(tmp_path):
    record = b"20 comment=aaaaaaaa\n"
    chain = b"".join(raw_header("chain", tarfile.XHDTYPE, len(record)) + record.ljust(512, b"\0") for _ in range(200))
    path = tmp_path / "chain.tar.gz"
    path.write_bytes(gzip_member(chain + raw_header("workspace/Projects/a", tarfile.REGTYPE, 0) + bytes(1024)))
    with pytest.raises(archive.Refused, match="extended headers in a row"):
        archive.extract(str(path), str(tmp_path), areas=AREAS, limits=archive.Limits())


def test_global_headers_that_add_up_are_refused(tmp_path):
    body = b"".join(b"1013 k%05d=%s\n" % (i, b"v" * 1000) for i in range(60))  # 60 KB each, under the limit
    one = raw_header("g", tarfile.XGLTYPE, len(body)) + body.ljust(-(-len(body) // 512) * 512, b"\0")
    path = tmp_path / "globals.tar.gz"
    path.write_bytes(gzip_member(one * 3 + bytes(1024)))
    assert "global headers add up" in " ".join(archive.verify(str(path)).problems)


def test_a_member_declaring_exabytes_is_refused_before_it_is_read(tmp_path):
    info = tarfile.TarInfo("workspace/Projects/endless")
    info.size = 1 << 62  # in a PAX "size" record
    path = tmp_path / "endless.tar.gz"
    path.write_bytes(gzip_member(info.tobuf(tarfile.PAX_FORMAT)) + gzipped_zeros(64 * MiB))
    started = time.monotonic()
    with pytest.raises(archive.Refused, match="a restore makes no file over"):
        archive.extract(str(path), str(tmp_path), areas=AREAS, limits=archive.Limits())
    assert time.monotonic() - started < 1


# --- hard links -------------------------------------------------------------------------------


def links_archive(path: Path, *, links: int, size: int) -> None:
    """One member of `size` bytes (that compress to almost nothing) and `links` hard links to it:
    a 9 KB archive with 40 links wrote 336 MB under a 10 MB limit."""
    members = [member("workspace/Projects/big", b"a" * size)]
    members += [member(f"workspace/Projects/l{i}", kind=tarfile.LNKTYPE, link="workspace/Projects/big") for i in range(links)]
    hostile_archive(path, members, config=CONFIG)


def disk_used(root: Path) -> int:
    return sum(os.lstat(Path(top) / name).st_blocks * 512 for top, dirs, files in os.walk(root) for name in files)


def test_hard_links_count_against_the_byte_limit(tmp_path):
    links_archive(tmp_path / "links.tar.gz", links=40, size=8_400_000)
    assert (tmp_path / "links.tar.gz").stat().st_size < 20_000
    dest = tmp_path / "staging"
    dest.mkdir()
    limit = 10 * MiB
    with pytest.raises(archive.Refused, match="a hard link counts as the copy it becomes"):
        archive.extract(str(tmp_path / "links.tar.gz"), str(dest), areas=AREAS, limits=archive.Limits(bytes=limit))
    assert disk_used(dest) <= limit


def test_hard_links_within_the_limit_are_restored_as_copies_on_no_more_disk_than_it(tmp_path):
    links_archive(tmp_path / "links.tar.gz", links=40, size=1_000_000)
    dest = tmp_path / "staging"
    dest.mkdir()
    limit = 42 * 1_000_000
    result = archive.extract(str(tmp_path / "links.tar.gz"), str(dest), areas=AREAS, limits=archive.Limits(bytes=limit))
    assert result.bytes == 41 * 1_000_000 and disk_used(dest) <= limit
    assert (dest / "workspace/Projects/l39").read_bytes() == b"a" * 1_000_000


@pytest.mark.slow  # seconds of CPU: left to `make test`, so that `make check` stays under a minute
def test_ten_thousand_links_to_one_member_and_links_to_links_are_counted(ram_path):
    members = [member("workspace/Projects/f", b"x" * 1000)]
    members += [member(f"workspace/Projects/l{i}", kind=tarfile.LNKTYPE, link="workspace/Projects/f") for i in range(10_000)]
    members += [member("workspace/Projects/ll", kind=tarfile.LNKTYPE, link="workspace/Projects/l9999")]
    hostile_archive(ram_path / "many.tar.gz", members, config=CONFIG)
    dest = ram_path / "staging"
    dest.mkdir()
    started = time.monotonic()
    with pytest.raises(archive.Refused, match="more than 5000000 bytes"):
        archive.extract(str(ram_path / "many.tar.gz"), str(dest), areas=AREAS, limits=archive.Limits(bytes=5_000_000))
    assert time.monotonic() - started < 20
    again = ram_path / "staging2"
    again.mkdir()
    result = archive.extract(str(ram_path / "many.tar.gz"), str(again), areas=AREAS, limits=archive.Limits(bytes=20_000_000))
    assert result.bytes == 10_002 * 1000 and (again / "workspace/Projects/ll").read_bytes() == b"x" * 1000


def test_a_restore_stops_when_the_staging_disk_is_nearly_full(tmp_path):
    links_archive(tmp_path / "links.tar.gz", links=1, size=1000)
    dest = tmp_path / "staging"
    dest.mkdir()
    free = os.statvfs(dest).f_bavail * os.statvfs(dest).f_frsize
    with pytest.raises(archive.NoSpace, match="must stay free"):
        archive.extract(str(tmp_path / "links.tar.gz"), str(dest), areas=AREAS, limits=archive.Limits(min_free=free + (1 << 40)))
    assert list(dest.iterdir()) == []


# --- sparse files -----------------------------------------------------------------------------

TiB = 1 << 40


def sparse_file(path: Path, size: int = 16 * TiB) -> tuple[int, dict[int, bytes]]:
    """`truncate -s 16T`, then a few MB written here and there. ext4 stops one block short of
    16 TiB; there the file is that block shorter. Returns (size, {offset: bytes written})."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            os.ftruncate(fd, size)
        except OSError:
            size -= 4096
            os.ftruncate(fd, size)
        written = {0: b"head" * 1024, 5 << 30: os.urandom(2 * MiB), size // 3 + 17: b"middle", size - MiB: os.urandom(MiB)}
        for offset, data in written.items():
            os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
    return size, written


def manifest_files(out: Path) -> list[dict]:
    with tarfile.open(out) as tar:
        return json.loads(tar.extractfile("manifest.json").read())["files"]


def archive_folder(src: Path, out: Path) -> float:
    started = time.monotonic()
    with archive.ArchiveWriter(str(out)) as writer:
        archive.add_tree(writer, os.open(src, os.O_RDONLY | os.O_DIRECTORY), "workspace/Projects")
        writer.commit({"sandbox": CONFIG}, mtime=time.time())
    return time.monotonic() - started


def assert_same_data(path: Path, size: int, written: dict[int, bytes]) -> None:
    st = path.stat()
    assert st.st_size == size and st.st_blocks * 512 < 64 * MiB  # sparse on disk
    with open(path, "rb") as f:
        for offset, data in written.items():
            f.seek(offset)
            assert f.read(len(data)) == data
        f.seek(MiB)
        assert f.read(4096) == bytes(4096)  # a hole reads as zeros


def test_a_16_tb_sparse_file_is_archived_in_seconds_listed_by_tar_and_restored_sparse(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    size, written = sparse_file(src / "huge")
    out = tmp_path / "b.tar.gz"
    assert archive_folder(src, out) < 10
    assert out.stat().st_size < 8 * MiB
    listing = subprocess.run(["tar", "tzvf", str(out)], capture_output=True, text=True, check=True).stdout
    assert f" {size} " in next(line for line in listing.splitlines() if line.endswith("workspace/Projects/huge"))
    checked = archive.verify(str(out))
    assert checked.ok, checked.problems
    (entry,) = [e for e in manifest_files(out) if e["path"] == "workspace/Projects/huge"]
    assert entry["size"] == size and "sparse" in entry
    dest = tmp_path / "staging"
    dest.mkdir()
    result = archive.extract(str(out), str(dest), areas=AREAS, limits=archive.Limits(bytes=16 * MiB))
    assert result.bytes < 16 * MiB  # the limit counts data, not holes
    assert_same_data(dest / "workspace/Projects/huge", size, written)
    gnu = tmp_path / "gnu"
    gnu.mkdir()
    subprocess.run(["tar", "xzf", str(out), "-C", str(gnu)], check=True)
    assert_same_data(gnu / "workspace/Projects/huge", size, written)


def test_a_sparse_member_stored_past_the_ustar_size_is_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(archive._writer, "USTAR_SIZE", 4096)  # as if it held more than 8 GiB of data
    src = tmp_path / "src"
    src.mkdir()
    size, written = sparse_file(src / "huge", size=TiB)
    (src / "after").write_text("after")
    out = tmp_path / "b.tar.gz"
    archive_folder(src, out)
    assert archive.verify(str(out)).ok
    assert f" {size} " in subprocess.run(["tar", "tzvf", str(out)], capture_output=True, text=True, check=True).stdout
    dest = tmp_path / "staging"
    dest.mkdir()
    archive.extract(str(out), str(dest), areas=AREAS, limits=archive.Limits())
    assert_same_data(dest / "workspace/Projects/huge", size, written)
    assert (dest / "workspace/Projects/after").read_text() == "after"


def test_a_hard_link_to_a_sparse_file_keeps_its_holes_and_counts_its_data(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    size, written = sparse_file(src / "huge", size=TiB)
    out = tmp_path / "b.tar.gz"
    with archive.ArchiveWriter(str(out)) as writer:
        archive.add_tree(writer, os.open(src, os.O_RDONLY | os.O_DIRECTORY), "workspace/Projects")
        writer.add_hardlink("workspace/Projects/again", "workspace/Projects/huge", mode=0o644, mtime=0)
        writer.commit({"sandbox": CONFIG}, mtime=time.time())
    dest = tmp_path / "staging"
    dest.mkdir()
    result = archive.extract(str(out), str(dest), areas=AREAS, limits=archive.Limits(bytes=32 * MiB))
    assert result.bytes < 32 * MiB
    assert_same_data(dest / "workspace/Projects/again", size, written)
    small = tmp_path / "staging2"
    small.mkdir()
    with pytest.raises(archive.Refused, match="a hard link counts"):
        archive.extract(str(out), str(small), areas=AREAS, limits=archive.Limits(bytes=4 * MiB))


def sparse_member(
    name: str, *, realsize: int, segments: list[tuple[int, int]], data: bytes, count: int | None = None, head: bytes | None = None
) -> bytes:
    """A GNU sparse 1.0 member as raw tar bytes, whatever its map says."""
    if head is None:
        head = b"%d\n" % (len(segments) if count is None else count) + b"".join(b"%d\n%d\n" % s for s in segments)
    head += bytes(-len(head) % 512)
    info = tarfile.TarInfo("GNUSparseFile.0/x")
    info.size = len(head) + len(data)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name, "GNU.sparse.realsize": str(realsize)}
    body = head + data
    return info.tobuf(tarfile.PAX_FORMAT) + body + bytes(-len(body) % 512)


@pytest.mark.parametrize(
    "case, kwargs, reason",
    [
        ("segments backwards", dict(realsize=10_000, segments=[(5000, 10), (0, 10)], data=b"x" * 20), "go backwards"),
        ("segment past the end", dict(realsize=100, segments=[(50, 100)], data=b"x" * 100), "past its end"),
        ("more data than stored", dict(realsize=10**9, segments=[(0, 10**6)], data=b"x" * 10), "more bytes than the member"),
        ("a map of a billion segments", dict(realsize=10, segments=[], data=b"", count=10**9), "more than 65536 segments"),
        ("a map that is not numbers", dict(realsize=10, segments=[], data=b"", head=b"1\nzz\n1\n"), "map is broken"),
        ("a map with no end", dict(realsize=10, segments=[], data=b"", head=b"1\n" + b"7" * 600), "map is broken"),
        ("sixteen exabytes", dict(realsize=(1 << 64) - 1, segments=[(0, 1)], data=b"x"), "a restore makes no file over"),
    ],
)
def test_a_lying_sparse_map_is_refused(case, kwargs, reason, tmp_path):
    raw = sparse_member("workspace/Projects/s", **kwargs)
    path = tmp_path / "s.tar.gz"
    path.write_bytes(gzip_member(raw + bytes(1024)))
    dest = tmp_path / "staging"
    dest.mkdir()
    with pytest.raises(archive.Refused, match=reason):
        archive.extract(str(path), str(dest), areas=AREAS, limits=archive.Limits())
    assert disk_used(dest) == 0


@pytest.mark.parametrize("fmt", ["old GNU", "0.1"])
def test_sparse_formats_the_panel_does_not_write_are_refused(fmt, tmp_path):
    if fmt == "old GNU":
        raw = raw_header("workspace/Projects/s", tarfile.GNUTYPE_SPARSE, 0)
    else:
        info = tarfile.TarInfo("workspace/Projects/s")
        info.pax_headers = {"GNU.sparse.map": "0,0", "GNU.sparse.size": "10"}
        raw = info.tobuf(tarfile.PAX_FORMAT)
    path = tmp_path / "s.tar.gz"
    path.write_bytes(gzip_member(raw + bytes(1024)))
    assert "does not read" in " ".join(archive.verify(str(path)).problems)


def test_a_sparse_files_data_moved_to_other_offsets_fails_verification(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "f", "wb") as f:
        f.write(b"d" * 4096)
        f.truncate(MiB)
    out = tmp_path / "b.tar.gz"
    archive_folder(src, out)
    manifest = json.dumps(archive.manifest_only(str(out)) | {"files": manifest_files(out)}).encode()
    # The same bytes, moved: the data's hash holds, the map's does not.
    forged = sparse_member("workspace/Projects/f", realsize=MiB, segments=[(8192, 4096)], data=b"d" * 4096)
    folder = tarfile.TarInfo("workspace/Projects")
    folder.type, folder.mode, folder.uid, folder.gid = tarfile.DIRTYPE, 0o755, 1000, 1000
    info = tarfile.TarInfo("manifest.json")
    info.size = len(manifest)
    raw = folder.tobuf(tarfile.PAX_FORMAT) + forged + info.tobuf(tarfile.PAX_FORMAT) + manifest + bytes(-len(manifest) % 512)
    (tmp_path / "forged.tar.gz").write_bytes(gzip_member(raw + bytes(1024)))
    problems = archive.verify(str(tmp_path / "forged.tar.gz")).problems
    assert any("workspace/Projects/f differs from the manifest" in p for p in problems), problems


def test_a_sparse_file_cut_up_to_make_its_holes_read_is_left_out_not_read_for_hours(tmp_path, monkeypatch):
    """More data blocks than a sparse map may list, spread evenly over a huge file: bounding the
    map merged its holes into one segment read as zeros (131,072 blocks of 4 KB over 16 TB, 512
    MB of quota, made 16 TB to read: hours, and the evidence archive has no cap). Past
    SPARSE_ZEROS_MOST of holes to read, the file is left out and named; the rest is archived."""
    monkeypatch.setattr(archive._writer, "SPARSE_SEGMENTS", 64)
    monkeypatch.setattr(archive._writer, "SPARSE_ZEROS_MOST", 64 * MiB, raising=False)
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "cut", "wb") as f:
        for i in range(256):
            f.seek(i * 16 * MiB)
            f.write(b"d" * 4096)
        f.truncate(256 * 16 * MiB)  # 4 GiB of which 1 MB is data
    (src / "kept").write_text("kept")
    read = []

    def progress(files: int, data: int) -> None:
        read.append(data)
        if data > 256 * MiB:
            raise AssertionError(f"read {data} bytes of a file that holds 1 MB")

    out = tmp_path / "b.tar.gz"
    with archive.ArchiveWriter(str(out), progress=progress) as writer:
        archive.add_tree(writer, os.open(src, os.O_RDONLY | os.O_DIRECTORY), "workspace/Projects")
        writer.commit({"sandbox": CONFIG}, mtime=0)
    checked = archive.verify(str(out))
    assert checked.ok, checked.problems
    assert any(s.startswith("workspace/Projects/cut (a sparse file cut into too many pieces") for s in checked.manifest["skipped"])
    dest = tmp_path / "staging"
    dest.mkdir()
    archive.extract(str(out), str(dest), areas=AREAS, limits=archive.Limits())
    assert (dest / "workspace/Projects/kept").read_text() == "kept" and not (dest / "workspace/Projects/cut").exists()


def test_data_segments_stay_few_however_a_file_is_cut_up(tmp_path, monkeypatch):
    monkeypatch.setattr(archive._writer, "SPARSE_SEGMENTS", 64)
    monkeypatch.setattr(archive._verify, "SPARSE_SEGMENTS", 64)
    path = tmp_path / "holey"
    with open(path, "wb") as f:
        for i in range(1000):
            f.seek(i << 16)
            f.write(b"d" * 10)
        f.truncate(1001 << 16)
    fd = os.open(path, os.O_RDONLY)
    try:
        segments = archive.data_segments(fd, path.stat().st_size)
    finally:
        os.close(fd)
    assert segments is not None and len(segments) < 64
    assert all(a + n <= b for (a, n), (b, _) in zip(segments, segments[1:], strict=False))
    out = tmp_path / "b.tar.gz"
    with archive.ArchiveWriter(str(out)) as writer:
        fd = os.open(path, os.O_RDONLY)
        writer.add_sparse_fd("workspace/Projects/holey", fd, size=path.stat().st_size, segments=segments, mode=0o644, mtime=0)
        os.close(fd)
        writer.commit({"sandbox": CONFIG}, mtime=0)
    dest = tmp_path / "staging"
    dest.mkdir()
    archive.extract(str(out), str(dest), areas=AREAS, limits=archive.Limits())
    assert (dest / "workspace/Projects/holey").read_bytes() == path.read_bytes()


def test_a_dense_file_is_archived_as_before(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "plain").write_bytes(os.urandom(100_000))
    out = tmp_path / "b.tar.gz"
    archive_folder(src, out)
    with tarfile.open(out) as tar:
        assert tar.getmember("workspace/Projects/plain").sparse is None
    entry = next(e for e in manifest_files(out) if e["path"] == "workspace/Projects/plain")
    assert "sparse" not in entry and entry["sha256"] == hashlib.sha256((src / "plain").read_bytes()).hexdigest()


def test_a_restore_stops_when_the_disk_fills_while_it_writes(tmp_path, monkeypatch):
    links_archive(tmp_path / "links.tar.gz", links=3, size=2 * MiB)
    dest = tmp_path / "staging"
    dest.mkdir()
    monkeypatch.setattr(archive._extract, "SPACE_EVERY", MiB)
    looks = []

    def fstatvfs(fd):  # plenty at the start, then someone else fills the disk
        looks.append(fd)
        return os.statvfs_result((4096, 4096, 0, 0, 10**9 if len(looks) == 1 else 0, 0, 0, 0, 0, 255))

    monkeypatch.setattr(os, "fstatvfs", fstatvfs)
    with pytest.raises(archive.NoSpace, match="only 0 bytes are free"):
        archive.extract(str(tmp_path / "links.tar.gz"), str(dest), areas=AREAS, limits=archive.Limits(min_free=MiB))
    assert len(looks) == 2 and disk_used(dest) <= 2 * MiB
