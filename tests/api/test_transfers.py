"""Files in and out through the API: the Files in and out card's service, its limits and checks
(the page's upload handler, unchanged), downloads streamed and audited as the token's."""

import hashlib
import io
import os
import tarfile

import pytest
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from audit.models import AuditEvent
from teams.models import Team

from .helpers import auth, member, token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def box(make_sandbox, fake_engine, clean_workspace):
    return make_sandbox("porter")


def upload(client, box, token, body: bytes, **extra):
    return client.generic(
        "POST", f"/api/v1/sandboxes/{box.pk}/transfer/upload/", body, content_type=MULTIPART_CONTENT, **auth(token), **extra
    )


def form(data: bytes, filename: str = "data.bin", **fields: str) -> bytes:
    """A form as a browser or curl -F sends it, the file's name written as given (Django's
    encode_multipart would drop any path before it)."""
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\nContent-Type: application/octet-stream'
    parts.append(f"{head}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def test_an_upload_lands_in_imports_and_is_audited_as_the_tokens(client, django_user_model, team, box):
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    data = os.urandom(50_000)
    answer = upload(client, box, token, form(data))
    digest = hashlib.sha256(data).hexdigest()
    assert answer.status_code == 201 and answer.json() == {"path": "imports/data.bin", "sha256": digest}
    assert (box.workspace_path / "imports" / "data.bin").read_bytes() == data
    event = AuditEvent.objects.get(action="transfer.upload")
    assert event.details == {"path": "imports/data.bin", "size": 50_000, "sha256": digest, "via": "api", "token": token[:12]}
    renamed = upload(client, box, token, form(b"abc", name="chosen.txt"))
    assert renamed.status_code == 201 and (box.workspace_path / "imports" / "chosen.txt").read_bytes() == b"abc"
    listed = client.get(f"/api/v1/sandboxes/{box.pk}/transfer/files/", **auth(token)).json()
    assert sorted(e["name"] for e in listed["imports"]) == ["chosen.txt", "data.bin"] and listed["exports"] == []


@pytest.mark.parametrize(("filename", "fields"), [("../escape.txt", {}), ("ok.txt", {"name": "a/b.txt"}), ("ok.txt", {"name": ".."})])
def test_bad_names_are_400_and_nothing_is_written(client, django_user_model, team, box, filename, fields):
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    answer = upload(client, box, token, form(b"data", filename, **fields))
    assert answer.status_code == 400 and answer.json()["detail"].startswith("Upload refused:")
    assert list((box.workspace_path / "imports").iterdir()) == []
    assert not (box.workspace_path / "escape.txt").exists()


def test_the_pages_upload_limits_hold(client, django_user_model, team, box, settings):
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    settings.TRANSFER_MAX_UPLOAD_BYTES = 1000
    big = upload(client, box, token, form(b"x" * 5000))
    assert big.status_code == 413 and "larger than the limit of 1000 bytes" in big.json()["detail"]
    settings.TRANSFER_MAX_UPLOAD_BYTES = 10**6
    body = form(b"x" * 5000)
    assert upload(client, box, token, body, CONTENT_LENGTH=str(len(body) - 50)).status_code == 400
    declared = upload(client, box, token, body, CONTENT_LENGTH=str(10**7))
    assert declared.status_code == 413
    assert upload(client, box, token, body, CONTENT_LENGTH="12x").status_code == 400
    assert upload(client, box, token, body, CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked").status_code == 411
    nothing = upload(client, box, token, encode_multipart(BOUNDARY, {"name": "x.txt"}))
    assert nothing.status_code == 400 and nothing.json() == {"file": ["Choose a file to upload."]}
    assert list((box.workspace_path / "imports").iterdir()) == []
    assert not AuditEvent.objects.filter(action="transfer.upload").exists()


def test_a_file_downloads_streamed_and_audited_as_the_tokens_when_it_ends(client, django_user_model, team, box):
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    data = os.urandom(3 * (1 << 20) + 7)
    (box.workspace_path / "exports" / "out.bin").write_bytes(data)
    answer = client.get(f"/api/v1/sandboxes/{box.pk}/transfer/download/", {"path": "out.bin"}, **auth(token))
    assert answer.status_code == 200 and answer.streaming and answer["Content-Type"] == "application/octet-stream"
    assert not AuditEvent.objects.filter(action="transfer.download").exists()  # the stream has not run yet
    chunks = list(answer.streaming_content)
    assert b"".join(chunks) == data and len(chunks) > 1  # a chunk at a time, never the whole file
    event = AuditEvent.objects.get(action="transfer.download")
    assert event.details["sha256"] == hashlib.sha256(data).hexdigest() and event.details["complete"] is True
    assert event.details["via"] == "api" and event.details["token"] == token[:12]


def test_a_folder_downloads_as_an_archive_and_paths_out_of_exports_are_refused(client, django_user_model, team, box):
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    exports = box.workspace_path / "exports"
    (exports / "report").mkdir()
    (exports / "report" / "a.txt").write_text("a")
    os.symlink("/etc/passwd", exports / "link-out")
    (box.workspace_path / "Projects" / "secret.txt").write_text("not for export")
    answer = client.get(f"/api/v1/sandboxes/{box.pk}/transfer/download/", {"path": "report"}, **auth(token))
    assert answer.status_code == 200 and answer["Content-Type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(b"".join(answer.streaming_content)), mode="r:gz") as tar:
        assert tar.extractfile("report/a.txt").read() == b"a"
    for path in ("../Projects/secret.txt", "/etc/passwd", "link-out"):
        refused = client.get(f"/api/v1/sandboxes/{box.pk}/transfer/download/", {"path": path}, **auth(token))
        assert refused.status_code == 400 and b"root:" not in refused.content and b"not for export" not in refused.content
    listed = client.get(f"/api/v1/sandboxes/{box.pk}/transfer/files/", {"path": "report"}, **auth(token)).json()
    assert [e["name"] for e in listed["exports"]] == ["a.txt"] and listed["path"] == "report"


def test_viewers_read_tokens_and_strangers_move_no_file(client, django_user_model, team, box):
    (box.workspace_path / "exports" / "out.txt").write_text("x")
    viewer = token_for(member(django_user_model, "eyes", team, "viewer"), "admin")
    reader = token_for(member(django_user_model, "ops", team, "operator"), "read")
    stranger = token_for(member(django_user_model, "far", Team.objects.create(name="O", slug="o"), "admin"), "admin")
    for token, expected in ((viewer, 403), (reader, 403), (stranger, 404)):
        assert upload(client, box, token, form(b"a")).status_code == expected
        assert client.get(f"/api/v1/sandboxes/{box.pk}/transfer/download/", {"path": "out.txt"}, **auth(token)).status_code == expected
        assert client.get(f"/api/v1/sandboxes/{box.pk}/transfer/files/", **auth(token)).status_code == expected
    assert list((box.workspace_path / "imports").iterdir()) == []
    assert not AuditEvent.objects.filter(action__startswith="transfer.").exists()
