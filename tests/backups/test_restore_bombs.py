"""Restores on the real engine against archives built to exhaust the worker or the disk: a
header bomb is refused at once in little memory, a hard-link bomb within the byte limit, a home
that would be written out whole past the limit is refused, and no staging folder is left. A
16 TB sparse file is backed up in seconds and comes back sparse."""

import hashlib
import os
import subprocess
import time
import tracemalloc
from pathlib import Path

import pytest

from backups import archive, services
from backups.models import Backup, Restore
from sandboxes import services as sandbox_services
from sandboxes.models import Sandbox
from tests.backups.helpers import backup_row, gzipped_zeros, header_bomb
from tests.backups.test_archive_bombs import KINDS, MiB, TiB, assert_same_data, disk_used, links_archive, sparse_file
from tests.backups.test_backup_restore import VALID, back_up

pytestmark = pytest.mark.docker
ACTOR = sandbox_services.SystemActor("test")


@pytest.fixture
def watched_extract(monkeypatch):
    """archive.extract, timed, with the disk its staging folder used when it ended (the restore
    removes the folder right after)."""
    seen: dict = {}
    real = archive.extract

    def extract(path, dest, **kwargs):
        started = time.monotonic()
        try:
            return real(path, dest, **kwargs)
        finally:
            seen["seconds"] = time.monotonic() - started
            seen["disk"] = disk_used(Path(dest))

    monkeypatch.setattr(archive, "extract", extract)
    return seen


def planted(sandbox: Sandbox, path: Path, sha256: str) -> Backup:
    return backup_row(sandbox, path, sha256, VALID)


def restore(sandbox: Sandbox, backup: Backup) -> Restore:
    request = services.restore_request(actor=ACTOR, backup=backup, sandbox=sandbox, enqueue=False)
    services.restore_perform(restore_id=request.pk)
    request.refresh_from_db()
    return request


def assert_refused_and_untouched(request: Restore, sandbox: Sandbox, settings, reason: str) -> None:
    sandbox.refresh_from_db()
    assert request.status == Restore.Status.REFUSED and reason in request.detail, request.detail
    assert (sandbox.workspace_path / "Projects" / "keep.txt").read_text() == "mine"
    assert sandbox.status == Sandbox.Status.RUNNING and sandbox.pending_action == ""
    assert not (settings.WORKSPACE_ROOT / f".restore-{request.pk}").exists()


@pytest.mark.parametrize("kind", ["pax", "gnu long name", "gnu long link"])
def test_a_header_bomb_is_refused_by_a_restore_at_once_in_little_memory(
    kind, make_sandbox, clean_docker, clean_workspace, watched_extract, settings
):
    sandbox = make_sandbox("victim")
    (sandbox.workspace_path / "Projects" / "keep.txt").write_text("mine")
    path = services.backup_root() / "victim-bomb.tar.gz"
    backup = planted(sandbox, path, header_bomb(path, KINDS[kind], gzipped_zeros(1 << 30)))
    tracemalloc.start()
    try:
        request = restore(sandbox, backup)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_refused_and_untouched(request, sandbox, settings, f"declares {1 << 30} bytes")
    assert watched_extract["seconds"] < 1 and peak < 100 * MiB, (watched_extract, peak)


def test_a_hard_link_bomb_is_refused_by_a_restore_within_the_byte_limit(
    make_sandbox, clean_docker, clean_workspace, watched_extract, settings
):
    sandbox = make_sandbox("victim")
    (sandbox.workspace_path / "Projects" / "keep.txt").write_text("mine")
    settings.RESTORE_MAX_BYTES = 10 * MiB
    path = services.backup_root() / "victim-links.tar.gz"
    links_archive(path, links=40, size=8_400_000)
    backup = planted(sandbox, path, hashlib.sha256(path.read_bytes()).hexdigest())
    request = restore(sandbox, backup)
    assert_refused_and_untouched(request, sandbox, settings, "a hard link counts as the copy it becomes")
    assert watched_extract["disk"] <= settings.RESTORE_MAX_BYTES


def test_a_home_whose_holes_would_be_written_out_past_the_limit_is_refused(make_sandbox, clean_docker, clean_workspace, settings, tmp_path):
    sandbox = make_sandbox("victim")
    (sandbox.workspace_path / "Projects" / "keep.txt").write_text("mine")
    size, _written = sparse_file(tmp_path / "huge", size=TiB)
    path = services.backup_root() / "victim-home.tar.gz"
    with archive.ArchiveWriter(str(path)) as writer:
        writer.add_dir("home", mode=0o755, mtime=0)
        fd = os.open(tmp_path / "huge", os.O_RDONLY)
        try:
            segments = archive.data_segments(fd, size)
            writer.add_sparse_fd("home/huge", fd, size=size, segments=segments, mode=0o644, mtime=0)
        finally:
            os.close(fd)
        _size, sha256 = writer.commit({"sandbox": VALID}, mtime=0)
    request = restore(sandbox, planted(sandbox, path, sha256))
    assert_refused_and_untouched(request, sandbox, settings, "The home's files add up to")


def test_a_16_tb_sparse_file_is_backed_up_in_seconds_and_restored_sparse(make_sandbox, clean_docker, clean_workspace):
    sandbox = make_sandbox("holes")
    huge = sandbox.workspace_path / "Projects" / "huge"
    size, written = sparse_file(huge)
    started = time.monotonic()
    backup = back_up(sandbox)
    seconds = time.monotonic() - started
    assert backup.status == Backup.Status.DONE, backup.detail
    assert seconds < 30 and backup.size_bytes < 8 * MiB, (seconds, backup.size_bytes)
    listing = subprocess.run(["tar", "tzvf", str(backup.path)], capture_output=True, text=True, check=True).stdout
    assert f" {size} " in next(line for line in listing.splitlines() if line.endswith("workspace/Projects/huge"))
    assert services.backup_verify(backup=backup).verified_ok is True
    huge.unlink()
    request = services.restore_request(actor=ACTOR, backup=backup, sandbox=sandbox, enqueue=False)
    services.restore_perform(restore_id=request.pk)
    request.refresh_from_db()
    assert request.status == Restore.Status.DONE, request.detail
    assert_same_data(huge, size, written)
