"""Files in through imports/ and out through exports/: limits, names, paths that try to leave the
folder, links that are never followed, and an audit event with the sha256 of every transfer."""

import hashlib
import html
import io
import os
import tarfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from audit.models import AuditEvent
from sandboxes.services import transfer
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


BOUNDARY = "ccpanel-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(filename: str, data: bytes, **fields: str) -> bytes:
    """A form's body as a browser (or curl -F) sends it, the file's name written as given."""
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\nContent-Type: application/octet-stream'
    parts.append(f"{head}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def upload_raw(client, box, body: bytes, **extra):
    client.generic("POST", f"/sandboxes/{box.pk}/transfer/upload/", body, content_type=MULTIPART, **extra)
    return client.get(f"/sandboxes/{box.pk}/").content.decode()


@pytest.mark.parametrize(
    "filename, reason",
    [
        ("../../x", "may not contain a slash: '../../x'"),
        ("a/b.txt", "may not contain a slash"),
        ("C:\\Users\\x.txt", "may not contain a slash"),
        ("..", "'..' is not a file name"),
        ("nul\x00byte", "may not contain a NUL character"),
        ("tab\tname", "may not contain control characters"),
        ("\u202egnp.exe", "U+202E, a character that changes the direction"),
    ],
)
def test_a_name_from_the_multipart_filename_alone_is_judged_not_rewritten(admin_client, box, filename, reason):
    page = upload_raw(admin_client, box, multipart(filename, b"data"))
    assert "Upload refused" in page and html.escape(reason) in page, page[-3000:]
    assert list((box.workspace_path / "imports").iterdir()) == []
    assert not (box.workspace_path / "x").exists() and not AuditEvent.objects.filter(action="transfer.upload").exists()


def test_a_good_multipart_filename_is_kept_as_sent(admin_client, box):
    upload_raw(admin_client, box, multipart("résumé v2.txt", b"data"))
    assert (box.workspace_path / "imports" / "résumé v2.txt").read_bytes() == b"data"


def test_a_chunked_upload_is_refused_saying_it_needs_a_length(admin_client, box):
    body = multipart("a.bin", b"x" * 5000)
    response = admin_client.generic(
        "POST", f"/sandboxes/{box.pk}/transfer/upload/", body, content_type=MULTIPART, CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked"
    )
    assert response.status_code == 411 and b"Content-Length" in response.content and b"chunked" in response.content
    assert list((box.workspace_path / "imports").iterdir()) == []


@pytest.mark.parametrize("cut", [10, 120, 200, 2000, -30])
def test_an_upload_shorter_than_its_form_says_it_stopped_short(admin_client, box, cut):
    body = multipart("a.bin", b"x" * 5000, name="a.bin")
    page = upload_raw(admin_client, box, body, CONTENT_LENGTH=str(len(body) + cut if cut < 0 else cut))
    assert "The upload stopped short" in page and "Choose a file" not in page
    assert list((box.workspace_path / "imports").iterdir()) == []
    assert not AuditEvent.objects.filter(action="transfer.upload").exists()


@pytest.mark.parametrize("length", ["-5", "12x"])
def test_an_upload_whose_length_is_not_one_is_refused_saying_so(admin_client, box, length):
    response = admin_client.generic(
        "POST", f"/sandboxes/{box.pk}/transfer/upload/", multipart("a", b"a"), content_type=MULTIPART, CONTENT_LENGTH=length
    )
    assert response.status_code == 400 and b"Content-Length is not a number of bytes" in response.content


def test_a_form_sent_without_a_file_asks_for_one(admin_client, box):
    page = upload_raw(admin_client, box, multipart("", b"", name="x.txt"))
    assert "Choose a file to upload." in page and "stopped short" not in page


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
