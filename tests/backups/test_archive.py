"""The archive module on its own (no Docker): what it writes reads back and verifies, and every
hostile archive is refused with nothing written outside the temporary folder."""

import hashlib
import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from backups import archive
from tests.backups.helpers import hostile_archive, member

AREAS = tuple(f"workspace/{f}" for f in ("Projects", "Documentation", "Research", "shared", "imports", "exports")) + ("home",)
CONFIG = {"name": "victim", "image": "ccpanel/test-busybox:latest", "memory_mb": 256, "cpus": "1", "network_mode": "none", "mounts": []}


def tree(root: Path) -> dict[str, str]:
    found = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top) / name
            if path.is_symlink():
                found[str(path.relative_to(root))] = "link:" + os.readlink(path)
            elif path.is_dir():
                found[str(path.relative_to(root))] = "dir"
            elif path.is_file():
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def write(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello\n" * 1000)
    (src / "random.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (src / "sub" / "b.txt").write_text("b")
    (src / "link").symlink_to("a.txt")
    (src / "suid").write_text("s")
    (src / "suid").chmod(0o4755)
    os.mkfifo(src / "fifo")
    out = tmp_path / "out" / "t.tar.gz"
    out.parent.mkdir()
    with archive.ArchiveWriter(str(out)) as writer:
        archive.add_tree(writer, os.open(src, os.O_RDONLY | os.O_DIRECTORY), "workspace/Projects")
        writer.commit({"sandbox": CONFIG}, mtime=time.time())
    return src, out


def test_written_archive_verifies_and_extracts_to_the_same_files(tmp_path):
    src, out = write(tmp_path)
    assert os.listdir(out.parent) == ["t.tar.gz"]  # only the final name: the temporary file is gone
    checked = archive.verify(str(out))
    assert checked.ok, checked.problems
    assert checked.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert checked.manifest["skipped"] == ["workspace/Projects/fifo"]
    dest = tmp_path / "dest"
    dest.mkdir()
    result = archive.extract(str(out), str(dest), areas=AREAS, limits=archive.Limits())
    got = tree(dest / "workspace" / "Projects")
    want = {k: v for k, v in tree(src).items() if k != "fifo"}
    assert got == want
    assert not os.stat(dest / "workspace" / "Projects" / "suid").st_mode & 0o6000  # setuid never archived
    assert result.sha256 == checked.sha256


def test_a_changed_member_fails_verification(tmp_path):
    _src, out = write(tmp_path)
    with tarfile.open(out) as tar:
        members = [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]
    rebuilt = tmp_path / "rebuilt.tar.gz"
    with tarfile.open(rebuilt, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if info.name == "workspace/Projects/a.txt":
                data = b"tampered" + data[8:]
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    checked = archive.verify(str(rebuilt))
    assert not checked.ok and any("a.txt differs" in p for p in checked.problems)


def test_an_aborted_archive_leaves_nothing(tmp_path):
    out = tmp_path / "x.tar.gz"
    with pytest.raises(RuntimeError), archive.ArchiveWriter(str(out)) as writer:
        writer.add_bytes("workspace/Projects/a", b"a" * 5_000_000, mtime=0)
        raise RuntimeError("the worker stops here")
    assert os.listdir(tmp_path) == []


ESCAPE = "ccpanel-escape-test"


def cases(outside: Path) -> dict[str, list]:
    """Each hostile archive's members; `outside` is where an escape would land."""
    rel_up = "../" * 12
    return {
        "absolute path": [member(str(outside / "abs.txt"))],
        "dot-dot": [member(f"workspace/Projects/{rel_up}{str(outside)[1:]}/dotdot.txt")],
        "symlink leaving (absolute)": [
            member("workspace/Projects/out", kind=tarfile.SYMTYPE, link=str(outside)),
            member("workspace/Projects/out/through-link.txt"),
        ],
        "symlink leaving (relative)": [member("workspace/Projects/up", kind=tarfile.SYMTYPE, link=rel_up + str(outside)[1:])],
        "symlink from the home to the workspace": [member("home/w", kind=tarfile.SYMTYPE, link="../workspace/Projects")],
        "hard link leaving (absolute)": [member("workspace/Projects/hl", kind=tarfile.LNKTYPE, link="/etc/passwd")],
        "hard link leaving (relative)": [member("workspace/Projects/hl", kind=tarfile.LNKTYPE, link=f"{rel_up}etc/passwd")],
        "hard link to a symlink": [
            member("workspace/Projects/target.txt"),
            member("workspace/Projects/s", kind=tarfile.SYMTYPE, link="target.txt"),
            member("workspace/Projects/hl", kind=tarfile.LNKTYPE, link="workspace/Projects/s"),
        ],
        "character device": [member("workspace/Projects/null", kind=tarfile.CHRTYPE)],
        "block device": [member("workspace/Projects/sda", kind=tarfile.BLKTYPE)],
        "fifo": [member("workspace/Projects/pipe", kind=tarfile.FIFOTYPE)],
        "setuid": [member("workspace/Projects/su", mode=0o4755)],
        "setgid": [member("workspace/Projects/sg", mode=0o2755)],
        "outside the areas": [member("elsewhere/file.txt")],
        "too many members": [member(f"workspace/Projects/f{i}") for i in range(6)],
        "too many bytes": [member("workspace/Projects/big", b"z" * 4096)],
    }


REASONS = {
    "absolute path": "absolute path",
    "dot-dot": "'..'",
    "symlink leaving (absolute)": "leaves its folder",
    "symlink leaving (relative)": "leaves its folder",
    "symlink from the home to the workspace": "leaves its folder",
    "hard link leaving (absolute)": "is a hard link to /etc/passwd, outside its folder workspace/Projects/",
    "hard link leaving (relative)": "is a hard link to ../../../../../../../../../../../../etc/passwd, outside its folder",
    "hard link to a symlink": "not a file extracted before it",
    "character device": "a device, a FIFO",
    "block device": "a device, a FIFO",
    "fifo": "a device, a FIFO",
    "setuid": "setuid or setgid",
    "setgid": "setuid or setgid",
    "outside the areas": "outside the folders a backup holds",
    "too many members": "more than 5 members",
    "too many bytes": "more than 1024 bytes",
}


@pytest.mark.parametrize("case", list(REASONS))
def test_each_hostile_archive_is_refused_with_nothing_written_outside(case, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    members = cases(outside)[case]
    path = tmp_path / "hostile.tar.gz"
    hostile_archive(path, members, config=CONFIG)
    dest = tmp_path / "staging"
    dest.mkdir()
    limits = archive.Limits(members=5, bytes=1024)
    with pytest.raises(archive.Refused) as refused:
        archive.extract(str(path), str(dest), areas=AREAS, limits=limits)
    assert REASONS[case] in str(refused.value)
    assert str(dest) not in str(refused.value)  # said in the archive's own terms, never the staging folder's
    assert os.listdir(outside) == []
    written = [str(p) for p in tmp_path.rglob("*") if not str(p).startswith((str(dest), str(outside), str(path)))]
    assert written == [], written


@pytest.mark.parametrize(
    "target",
    ["workspace/Projects/../../../../x", "workspace/shared/f", "workspace/Projects/./f", "home/f", "../workspace/Projects/f"],
)
def test_a_refused_hard_link_is_named_with_the_archive_s_own_paths(target, tmp_path):
    path = tmp_path / "hl.tar.gz"
    members = [member("workspace/shared/f"), member("workspace/Projects/f")]
    hostile_archive(path, [*members, member("workspace/Projects/hl", kind=tarfile.LNKTYPE, link=target)], config=CONFIG)
    dest = tmp_path / "staging"
    dest.mkdir()
    with pytest.raises(archive.Refused) as refused:
        archive.extract(str(path), str(dest), areas=AREAS, limits=archive.Limits())
    assert str(refused.value) == f"workspace/Projects/hl is a hard link to {target}, outside its folder workspace/Projects/."
    assert not (dest / "workspace/Projects/hl").exists()


def test_links_between_the_workspace_folders_are_kept(tmp_path):
    path = tmp_path / "links.tar.gz"
    hostile_archive(
        path, [member("workspace/shared/y", b"y"), member("workspace/Projects/x", kind=tarfile.SYMTYPE, link="../shared/y")], config=CONFIG
    )
    dest = tmp_path / "staging"
    dest.mkdir()
    archive.extract(str(path), str(dest), areas=AREAS, limits=archive.Limits())
    assert os.readlink(dest / "workspace/Projects/x") == "../shared/y"


def test_names_with_nul_are_refused():
    with pytest.raises(archive.Refused):
        archive._rules._check_name("workspace/Projects/a\x00b", AREAS)


def test_invalid_utf8_names_are_refused(tmp_path):
    path = tmp_path / "bad-name.tar.gz"
    name = b"workspace/Projects/caf\xe9-\xff".decode("utf-8", "surrogateescape")
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    dest = tmp_path / "staging"
    dest.mkdir()
    with pytest.raises(archive.Refused, match="UTF-8"):
        archive.extract(str(path), str(dest), areas=AREAS, limits=archive.Limits())
    assert list(dest.rglob("*")) == []


def test_links_pointing_outside_can_be_left_out_on_request(tmp_path):
    path = tmp_path / "venv.tar.gz"
    hostile_archive(
        path,
        [
            member("workspace/Projects/venv/bin/python", kind=tarfile.SYMTYPE, link="/usr/bin/python3"),
            member("workspace/Projects/app.py", b"print(1)"),
        ],
        config=CONFIG,
    )
    dest = tmp_path / "staging"
    dest.mkdir()
    with pytest.raises(archive.Refused, match="leaves its folder"):
        archive.extract(str(path), str(dest), areas=AREAS, limits=archive.Limits())
    dest2 = tmp_path / "staging2"
    dest2.mkdir()
    result = archive.extract(str(path), str(dest2), areas=AREAS, limits=archive.Limits(), drop_outside_links=True)
    assert result.dropped == ["workspace/Projects/venv/bin/python -> /usr/bin/python3"]
    assert (dest2 / "workspace/Projects/app.py").read_bytes() == b"print(1)"
    assert not (dest2 / "workspace/Projects/venv/bin/python").exists()


def test_a_large_manifest_is_read_a_line_at_a_time(tmp_path, monkeypatch):
    src, out = write(tmp_path)
    monkeypatch.setattr(archive._verify, "SMALL_MANIFEST", 16)  # as if it listed millions of files
    checked = archive.verify(str(out))
    assert checked.ok, checked.problems
    dest = tmp_path / "dest"
    dest.mkdir()
    archive.extract(str(out), str(dest), areas=AREAS, limits=archive.Limits())
    assert (dest / "workspace/Projects/sub/b.txt").read_text() == "b"


def test_what_a_restore_would_refuse_is_left_out_of_a_backup_and_named(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("ok")
    (src / "line\nbreak.txt").write_text("x")
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(17):  # a path longer than 4096 bytes (made part by part: PATH_MAX is 4096)
        name = f"{i:02}" + "d" * 250
        os.mkdir(name, dir_fd=fd)
        fd, old = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(old)
    os.close(os.open("far.txt", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
    out = tmp_path / "out.tar.gz"
    with archive.ArchiveWriter(str(out)) as writer:
        archive.add_tree(writer, os.open(src, os.O_RDONLY | os.O_DIRECTORY), "workspace/Projects")
        writer.commit({"sandbox": CONFIG}, mtime=time.time())
    skipped = " ".join(archive.verify(str(out)).manifest["skipped"])
    assert "control character" in skipped and "longer than 4096 bytes" in skipped
    dest = tmp_path / "dest"
    dest.mkdir()
    archive.extract(str(out), str(dest), areas=AREAS, limits=archive.Limits())  # restorable as a whole
    assert (dest / "workspace/Projects/ok.txt").read_text() == "ok"


@pytest.mark.slow  # seconds of CPU: left to `make test`, so that `make check` stays under a minute
def test_restoring_many_links_and_deep_folders_takes_linear_time(ram_path):
    members = [member(f"workspace/Projects/f{i}") for i in range(5000)]
    members += [member(f"workspace/Projects/l{i}", kind=tarfile.SYMTYPE, link=f"f{i}") for i in range(5000)]
    path = "workspace/Projects/" + "/".join(f"d{i}" for i in range(300))
    members += [member(f"{path}/deep{i}") for i in range(200)]
    hostile_archive(ram_path / "many.tar.gz", members, config=CONFIG)
    dest = ram_path / "dest"
    dest.mkdir()
    started = time.monotonic()
    archive.extract(str(ram_path / "many.tar.gz"), str(dest), areas=AREAS, limits=archive.Limits())
    assert time.monotonic() - started < 20  # quadratic, this took minutes
    assert os.readlink(dest / "workspace/Projects/l4999") == "f4999"


def test_a_file_linked_many_times_is_archived_once_and_restored_as_copies(tmp_path):
    """A hard link is archived as a link to the first name of its file, not as one more copy: a
    file of the quota's size linked thousands of times made an archive (and a read) of thousands
    of times the quota. A link to a file of another folder stays a copy (a restore looks for a
    link's target in its own folder only)."""
    src, other = tmp_path / "src", tmp_path / "other"
    (src / "sub").mkdir(parents=True)
    other.mkdir()
    data = os.urandom(1024 * 1024)
    (src / "a.bin").write_bytes(data)
    for n in range(40):
        os.link(src / "a.bin", src / "sub" / f"l{n}")
    os.link(src / "a.bin", other / "away")
    out = tmp_path / "t.tar.gz"
    with archive.ArchiveWriter(str(out)) as writer:
        archive.add_tree(writer, os.open(src, os.O_RDONLY | os.O_DIRECTORY), "workspace/Projects")
        archive.add_tree(writer, os.open(other, os.O_RDONLY | os.O_DIRECTORY), "workspace/shared")
        writer.commit({"sandbox": CONFIG}, mtime=time.time())
        # What it unpacks to (a restore makes each link a copy, and its room is this figure)...
        assert writer.done.bytes == 42 * len(data)
    # ...but read and written twice (once per folder), not 42 times.
    assert out.stat().st_size < 3 * len(data)
    checked = archive.verify(str(out))
    assert checked.ok, checked.problems
    with tarfile.open(out) as tar:
        links = {m.name: m.linkname for m in tar.getmembers() if m.islnk()}
    assert links == {f"workspace/Projects/sub/l{n}": "workspace/Projects/a.bin" for n in range(40)}

    dest = tmp_path / "dest"
    dest.mkdir()
    archive.extract(str(out), str(dest), areas=AREAS, limits=archive.Limits())
    for n in range(40):
        assert (dest / "workspace/Projects/sub" / f"l{n}").read_bytes() == data
    assert (dest / "workspace/shared/away").read_bytes() == data
    # The restore still counts every copy it writes: 42 MB do not fit in a 10 MB limit.
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(archive.Refused):
        archive.extract(str(out), str(again), areas=AREAS, limits=archive.Limits(bytes=10 * 1024 * 1024))


@pytest.mark.slow  # seconds of CPU: left to `make test`, so that `make check` stays under a minute
def test_a_folder_of_many_entries_or_many_fifos_takes_a_backup_little_memory(tmp_path, monkeypatch):
    """A sandbox makes some 2,900 empty files or FIFOs a MB of its quota. A backup listed each
    folder whole before walking it, and kept the name of every FIFO it left out (each up to 4 KB
    deep down): tens of millions of them took the worker's memory, and the manifest's. Now a
    big folder is read a block at a time, and the names left out are the first ones and a count."""
    import tracemalloc

    from sandboxes import fdwalk

    monkeypatch.setattr(fdwalk, "SORTED_MOST", 500)
    monkeypatch.setattr(fdwalk.Noted, "MOST", 50)
    src = tmp_path / "src"
    deep = src / "d" / ("x" * 200)
    deep.mkdir(parents=True)
    for n in range(1000):
        os.mkfifo(deep / f"{'p' * 200}{n}")
    for n in range(8000):
        os.close(os.open(src / f"{'e' * 100}{n}", os.O_CREAT | os.O_WRONLY, 0o600))
    out = tmp_path / "t.tar.gz"
    tracemalloc.start()
    try:
        with archive.ArchiveWriter(str(out), workers=1) as writer:
            archive.add_tree(writer, os.open(src, os.O_RDONLY | os.O_DIRECTORY), "workspace/Projects")
            _size, peak = tracemalloc.get_traced_memory()
            writer.commit({"sandbox": CONFIG}, mtime=time.time())
    finally:
        tracemalloc.stop()
    # The writer's own buffers take some 4 MB whatever the tree; listed whole and every name
    # kept, these 9,000 entries took 8 MB more (23,000 took 21 MB, 63,000 took 54 MB).
    assert peak < 7 * 1024 * 1024, peak
    checked = archive.verify(str(out))
    assert checked.ok, checked.problems
    skipped = checked.manifest["skipped"]
    assert len(skipped) == 51 and skipped[-1] == "... and 950 more, not listed"
    assert checked.files == 1 + 1 + 1 + 8000  # Projects, d, d/x..., and every file, none lost
