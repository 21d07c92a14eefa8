"""Files in through imports/ and out through exports/: limits, names, paths that try to leave the
folder, links that are never followed, and an audit event with the sha256 of every transfer."""

import hashlib
import io
import os
import tarfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from audit.models import AuditEvent
from sandboxes import transfer
from teams.models import Membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def box(make_sandbox, fake_engine, clean_workspace):
    return make_sandbox("porter")


def test_an_upload_lands_in_imports_and_is_audited_with_its_sha256(admin_client, box):
    data = os.urandom(50_000)
    response = admin_client.post(f"/sandboxes/{box.pk}/transfer/upload/", {"file": SimpleUploadedFile("data.bin", data)})
    assert response.status_code == 302
    target = box.workspace_path / "imports" / "data.bin"
    assert target.read_bytes() == data
    if os.geteuid() == 0:
        assert (target.stat().st_uid, target.stat().st_gid) == (1000, 1000)
    event = AuditEvent.objects.get(action="transfer.upload")
    assert event.details == {"path": "imports/data.bin", "size": 50_000, "sha256": hashlib.sha256(data).hexdigest()}
    assert [p.name for p in (box.workspace_path / "imports").iterdir()] == ["data.bin"]  # no temporary file left


def test_an_oversized_upload_is_refused_and_nothing_is_written(admin_client, box, settings):
    settings.TRANSFER_MAX_UPLOAD_BYTES = 1000
    response = admin_client.post(f"/sandboxes/{box.pk}/transfer/upload/", {"file": SimpleUploadedFile("big.bin", b"x" * 5000)}, follow=True)
    assert b"larger than the limit" in response.content
    assert list((box.workspace_path / "imports").iterdir()) == []
    assert not AuditEvent.objects.filter(action="transfer.upload").exists()


@pytest.mark.parametrize("name", ["../escape.txt", "a/b.txt", "..", ".", "nul\x00byte", "tab\tname", "x" * 256])
def test_bad_names_are_refused_and_nothing_is_written(admin_client, box, name):
    response = admin_client.post(
        f"/sandboxes/{box.pk}/transfer/upload/", {"file": SimpleUploadedFile("ok.txt", b"data"), "name": name}, follow=True
    )
    assert b"Upload refused" in response.content
    assert list((box.workspace_path / "imports").iterdir()) == []
    assert not (box.workspace_path / "escape.txt").exists()


def test_the_service_refuses_bad_names_and_paths_whoever_calls(admin_user, box):
    for name in ("../x", "a/b", "a\x00b", ".."):
        with pytest.raises(transfer.TransferError):
            transfer.upload(actor=admin_user, sandbox=box, name=name, source=io.BytesIO(b"x"))
    for path in ("../Projects", "/etc", "a/../../x"):
        with pytest.raises(transfer.TransferError):
            transfer.upload(actor=admin_user, sandbox=box, name="ok", source=io.BytesIO(b"x"), path=path)
    assert list((box.workspace_path / "imports").iterdir()) == []


def download(client, box, path: str):
    return client.get(f"/sandboxes/{box.pk}/transfer/download/", {"path": path})


def test_a_file_downloads_from_exports_and_is_audited(admin_client, box):
    data = b"result\n" * 1000
    (box.workspace_path / "exports" / "out.txt").write_bytes(data)
    response = download(admin_client, box, "out.txt")
    assert response.status_code == 200 and b"".join(response.streaming_content) == data
    event = AuditEvent.objects.get(action="transfer.download")
    assert event.details["sha256"] == hashlib.sha256(data).hexdigest() and event.details["complete"] is True


@pytest.mark.parametrize(
    "path", ["../Projects/secret.txt", "/etc/passwd", "../../../../etc/passwd", "link-out", "dir-link/passwd", "nul\x00"]
)
def test_a_download_whose_path_leaves_the_folder_is_refused(admin_client, box, path):
    (box.workspace_path / "Projects" / "secret.txt").write_text("not for export")
    os.symlink("/etc/passwd", box.workspace_path / "exports" / "link-out")
    os.symlink("/etc", box.workspace_path / "exports" / "dir-link")
    response = download(admin_client, box, path)
    assert response.status_code == 400
    assert b"root:" not in response.content and b"not for export" not in response.content


def test_a_folder_downloads_as_an_archive_with_links_kept_as_links(admin_client, box):
    exports = box.workspace_path / "exports"
    (exports / "report").mkdir()
    (exports / "report" / "a.txt").write_text("a")
    os.symlink("/etc/passwd", exports / "report" / "passwd")
    os.mkfifo(exports / "report" / "pipe")
    response = download(admin_client, box, "report")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("report/a.txt").read() == b"a"
    assert names["report/passwd"].issym() and names["report/passwd"].linkname == "/etc/passwd"
    assert "report/pipe" not in names
    assert b"root:x:0:0" not in body
    event = AuditEvent.objects.get(action="transfer.download")
    assert event.details["archive"] is True and event.details["sha256"] == hashlib.sha256(body).hexdigest()


def test_viewers_can_neither_upload_nor_download(client, box, django_user_model, team):
    viewer = django_user_model.objects.create_user("watcher", password="pw-watch-123")
    Membership.objects.create(user=viewer, team=team, role="viewer")
    client.force_login(viewer)
    (box.workspace_path / "exports" / "out.txt").write_text("x")
    assert client.post(f"/sandboxes/{box.pk}/transfer/upload/", {"file": SimpleUploadedFile("a.txt", b"a")}).status_code == 403
    assert download(client, box, "out.txt").status_code == 403
    assert list((box.workspace_path / "imports").iterdir()) == []
