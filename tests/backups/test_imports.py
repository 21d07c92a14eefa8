"""Imported archives are checked within a restore's limits, a header bomb among them fails its
check at once in little memory, and the import and verify tasks give up after a bounded number
of deliveries whose worker died (acks_late would hand them back forever)."""

import functools
import os
import tarfile
import time
import tracemalloc

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from audit.models import AuditEvent
from backups import archive, services
from backups.models import Backup
from backups.services.attempts import backup_verify_perform
from backups.tasks import backup_import_task, backup_verify_task
from sandboxes.services import SystemActor
from tests.backups.helpers import gzipped_zeros, header_bomb, hostile_archive, member
from tests.backups.test_archive import CONFIG
from tests.backups.test_archive_bombs import KINDS

ACTOR = SystemActor("test")


@pytest.fixture(scope="module")
def gigabyte() -> bytes:
    return gzipped_zeros(1 << 30)


def imported(team, path) -> Backup:
    with open(path, "rb") as source:
        return services.backup_import(actor=ACTOR, team=team, source=source, enqueue=False)


@pytest.mark.parametrize("kind", ["pax", "gnu long name", "gnu long link"])
def test_an_imported_header_bomb_fails_its_check_at_once_in_little_memory(kind, team, gigabyte, tmp_path):
    header_bomb(tmp_path / "bomb.tar.gz", KINDS[kind], gigabyte)
    backup = imported(team, tmp_path / "bomb.tar.gz")
    tracemalloc.start()
    started = time.monotonic()
    try:
        checked = services.backup_import_perform(backup_id=backup.pk)
        seconds = time.monotonic() - started
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert checked.status == Backup.Status.FAILED and f"declares {1 << 30} bytes" in checked.detail
    assert seconds < 1 and peak < 100 * 2**20, (seconds, peak)  # tarfile alone: 2 GB, 12 s
    assert checked.attempts == 0 and checked.config == {}


def test_an_import_a_restore_would_refuse_for_its_size_fails_its_check(team, tmp_path, settings):
    settings.RESTORE_MAX_BYTES = 1000
    hostile_archive(tmp_path / "big.tar.gz", [member("workspace/Projects/big", b"z" * 4096)], config=CONFIG)
    checked = services.backup_import_perform(backup_id=imported(team, tmp_path / "big.tar.gz").pk)
    assert checked.status == Backup.Status.FAILED and "more than 1000 bytes" in checked.detail


IMPORT_REFUSALS = {
    "absolute path": ([member("/etc/cron.d/x")], "A member has an absolute path: /etc/cron.d/x."),
    "dot-dot": ([member("workspace/Projects/../../x")], "A member's path holds '..', '.' or an empty part"),
    "device": ([member("workspace/Projects/null", kind=tarfile.CHRTYPE)], "workspace/Projects/null is a device, a FIFO"),
    "setuid": ([member("workspace/Projects/su", mode=0o4755)], "workspace/Projects/su has the setuid or setgid bit."),
    "hard link leaving": (
        [member("workspace/Projects/hl", kind=tarfile.LNKTYPE, link="/etc/shadow")],
        "workspace/Projects/hl is a hard link to /etc/shadow, outside its folder workspace/Projects/.",
    ),
    "written through a link": (
        [member("workspace/Projects/d", kind=tarfile.SYMTYPE, link="../shared"), member("workspace/Projects/d/x")],
        "workspace/Projects/d is a link that other members would be written through.",
    ),
}


@pytest.mark.parametrize("case", list(IMPORT_REFUSALS))
def test_an_import_a_restore_would_refuse_for_a_member_fails_its_check_and_says_why(case, team, tmp_path):
    members, reason = IMPORT_REFUSALS[case]
    hostile_archive(tmp_path / "bad.tar.gz", members, config=CONFIG)
    checked = services.backup_import_perform(backup_id=imported(team, tmp_path / "bad.tar.gz").pk)
    assert checked.status == Backup.Status.FAILED and checked.verified_ok is False
    assert checked.detail.startswith(reason), checked.detail
    assert checked.config == {}


def test_an_import_with_links_leaving_their_folder_says_a_restore_must_leave_them_out(team, tmp_path):
    members = [member("workspace/Projects/venv/bin/python", kind=tarfile.SYMTYPE, link="/usr/bin/python3"), member("workspace/Projects/a")]
    hostile_archive(tmp_path / "venv.tar.gz", members, config=CONFIG)
    checked = services.backup_import_perform(backup_id=imported(team, tmp_path / "venv.tar.gz").pk)
    assert checked.status == Backup.Status.DONE and checked.config == CONFIG
    assert checked.detail == (
        "Links that point outside their folder: 1 (such as workspace/Projects/venv/bin/python -> /usr/bin/python3); "
        "a restore refuses them unless told to leave such links out."
    )


def test_an_import_that_stops_short_or_comes_in_chunks_says_so_and_keeps_nothing(admin_client, team, tmp_path):
    hostile_archive(tmp_path / "ok.tar.gz", [member("workspace/Projects/a", os.urandom(100_000))], config=CONFIG)
    archive_bytes = (tmp_path / "ok.tar.gz").read_bytes()
    body = encode_multipart(BOUNDARY, {"team": str(team.pk), "archive": SimpleUploadedFile("ok.tar.gz", archive_bytes)})
    before = set(services.backup.backup_root().iterdir())  # made if no test before this one made it
    post = functools.partial(admin_client.generic, "POST", "/backups/import/", body, content_type=MULTIPART_CONTENT)
    post(CONTENT_LENGTH=str(len(body) - 1000))
    page = admin_client.get("/backups/").content.decode()
    assert "The upload stopped short" in page
    chunked = post(CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked")
    assert chunked.status_code == 411 and b"Content-Length" in chunked.content
    assert not Backup.objects.exists() and set(settings.BACKUP_ROOT.iterdir()) == before


def dying(monkeypatch) -> None:
    """Each check kills its worker (as the kernel's OOM killer would): nothing after it runs."""

    def die(*args, **kwargs):
        raise SystemExit("killed")

    monkeypatch.setattr(archive, "verify", die)


def test_an_import_whose_worker_dies_every_time_gives_up(team, tmp_path, monkeypatch):
    hostile_archive(tmp_path / "ok.tar.gz", [member("workspace/Projects/a", b"a")], config=CONFIG)
    backup = imported(team, tmp_path / "ok.tar.gz")
    dying(monkeypatch)
    for _ in range(settings.SANDBOX_MAX_ATTEMPTS):
        with pytest.raises(SystemExit):
            backup_import_task(backup.pk)  # redelivered after each death
    monkeypatch.undo()
    backup_import_task(backup.pk)
    backup.refresh_from_db()
    assert backup.status == Backup.Status.FAILED and backup.detail.startswith(f"Given up after {settings.SANDBOX_MAX_ATTEMPTS} attempts")


def test_a_verify_whose_worker_dies_every_time_gives_up_and_a_later_one_runs(team, tmp_path, monkeypatch):
    hostile_archive(tmp_path / "ok.tar.gz", [member("workspace/Projects/a", b"a")], config={**CONFIG, "name": "a"})
    backup = services.backup_import_perform(backup_id=imported(team, tmp_path / "ok.tar.gz").pk)
    assert backup.status == Backup.Status.DONE, backup.detail
    dying(monkeypatch)
    for _ in range(settings.SANDBOX_MAX_ATTEMPTS):
        with pytest.raises(SystemExit):
            backup_verify_task(backup.pk)
    monkeypatch.undo()
    backup_verify_task(backup.pk)
    backup.refresh_from_db()
    assert backup.verified_ok is False and backup.verify_detail.startswith("Given up after")
    assert AuditEvent.objects.filter(action="backup.verify_failed").exists()
    # The count starts again: the next verify the user asks for runs.
    assert backup_verify_perform(backup_id=backup.pk).verified_ok is True
    backup.refresh_from_db()
    assert backup.attempts == 0


def test_an_import_whose_manifest_names_its_sandbox_with_a_bidi_control_is_refused(team, tmp_path):
    hostile_archive(tmp_path / "bidi.tar.gz", [member("workspace/Projects/a")], config={**CONFIG, "name": "\u202egnp.exe"})
    checked = services.backup_import_perform(backup_id=imported(team, tmp_path / "bidi.tar.gz").pk)
    assert checked.status == Backup.Status.FAILED and "U+202E" in checked.detail
    assert "\u202e" not in checked.sandbox_name and checked.config == {}
