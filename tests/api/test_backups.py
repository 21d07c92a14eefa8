"""The backup endpoints: the same services as the Backups pages, each long action a 202 whose
state is read at its url, downloads that stream the very file, imports under the page's limits."""

import hashlib
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from audit.models import AuditEvent
from backups import services
from backups.models import Backup, Restore
from controlpanel.celery import app as celery_app
from sandboxes.models import Sandbox
from teams.models import Team
from tests.backups.helpers import backup_row, hostile_archive
from tests.backups.helpers import member as archive_member
from tests.backups.test_archive import CONFIG

from .helpers import auth, member, post_json, token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager_tasks():
    """Tasks run in-process when they are sent (the real task code: no worker, no broker)."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture
def box(make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("keeper")
    (sandbox.workspace_path / "Projects" / "notes.txt").write_text("remember this\n")
    return sandbox


def _via_api(event: AuditEvent, token: str) -> bool:
    return event.details.get("via") == "api" and token.startswith(event.details.get("token", "-"))


def test_a_backup_is_202_with_the_url_where_its_state_is_read(client, django_user_model, team, box):
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    answer = post_json(client, "/api/v1/backups/", token, {"sandbox": box.pk})
    assert answer.status_code == 202, answer.content
    url = answer.json()["url"]
    backup = Backup.objects.get(sandbox=box)
    assert url == f"/api/v1/backups/{backup.pk}/" and answer["Location"] == url
    assert answer.json()["backup"]["status"] == "running"
    assert Sandbox.objects.get(pk=box.pk).pending_action == "backup"  # claimed, as by the page's Back up now
    assert _via_api(AuditEvent.objects.get(action="backup.requested"), token)
    shown = client.get(url, **auth(token)).json()
    assert shown["status"] == "running" and shown["file_name"] == backup.file_name and shown["download"] is None
    listed = client.get(f"/api/v1/backups/?sandbox={box.pk}&status=running", **auth(token)).json()
    assert [r["id"] for r in listed["results"]] == [backup.pk] and listed["count"] == 1
    assert client.get(f"/api/v1/backups/?sandbox={box.pk}&status=done", **auth(token)).json()["count"] == 0


def test_a_finished_backup_downloads_as_its_very_file(client, django_user_model, team, box):
    backup = _finished(box)
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    shown = client.get(f"/api/v1/backups/{backup.pk}/", **auth(token)).json()
    assert shown["status"] == "done" and shown["download"] == f"/api/v1/backups/{backup.pk}/download/"
    download = client.get(shown["download"], **auth(token), HTTP_ACCEPT="application/json")  # Accept cannot make it a 406
    assert download.status_code == 200 and download["Content-Type"] == "application/gzip"
    assert download.streaming and b"".join(download.streaming_content) == backup.path.read_bytes()
    assert _via_api(AuditEvent.objects.get(action="backup.downloaded"), token)


def test_a_backup_the_state_refuses_is_409_and_a_viewer_403(client, django_user_model, team, box):
    Sandbox.objects.filter(pk=box.pk).update(pending_action="stop")
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    refused = post_json(client, "/api/v1/backups/", token, {"sandbox": box.pk})
    assert refused.status_code == 409 and refused.json()["detail"]
    viewer = token_for(member(django_user_model, "eyes", team, "viewer"), "admin")
    assert post_json(client, "/api/v1/backups/", viewer, {"sandbox": box.pk}).status_code == 403
    assert not Backup.objects.exists()


def test_another_teams_backup_is_404_and_its_sandbox_no_such_sandbox(client, django_user_model, team, box):
    backup = services.backup_request(actor=services.backup.SystemActor("test"), sandbox=box, enqueue=False)
    other = Team.objects.create(name="Other", slug="other")
    stranger = token_for(member(django_user_model, "stranger", other, "admin"), "admin")
    for url in (f"/api/v1/backups/{backup.pk}/", f"/api/v1/backups/{backup.pk}/download/", "/api/v1/backups/99999/", "/api/v1/backups/x/"):
        assert client.get(url, **auth(stranger)).status_code == 404, url
    assert post_json(client, f"/api/v1/backups/{backup.pk}/verify/", stranger).status_code == 404
    refused = post_json(client, "/api/v1/backups/", stranger, {"sandbox": box.pk})
    assert refused.status_code == 400 and refused.json() == {"sandbox": ["No such sandbox."]}
    assert client.get("/api/v1/backups/", **auth(stranger)).json()["count"] == 0


def _finished(box) -> Backup:
    """A finished backup of `box`: an archive shaped as the panel writes them, under BACKUP_ROOT
    (the fake engine keeps no home volume to read: the writing itself is the docker tests')."""
    path = services.backup_root() / f"{box.name}-by-hand.tar.gz"
    members = [archive_member("workspace/Projects/notes.txt", b"remember this\n")]
    sha256 = hostile_archive(path, members, config={**CONFIG, "name": box.name})
    return backup_row(box, path, sha256, {**CONFIG, "name": box.name})


def test_verify_is_202_and_its_outcome_is_read_at_the_backups_url(client, django_user_model, team, box, eager_tasks):
    backup = _finished(box)
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    answer = post_json(client, f"/api/v1/backups/{backup.pk}/verify/", token)
    assert answer.status_code == 202 and answer.json()["url"] == f"/api/v1/backups/{backup.pk}/"
    shown = client.get(answer.json()["url"], **auth(token)).json()
    assert shown["verified_ok"] is True and shown["verified_at"]
    with open(backup.path, "r+b") as f:  # one byte changed: the next check says so
        f.seek(-1, io.SEEK_END)
        last = f.read(1)
        f.seek(-1, io.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    assert post_json(client, f"/api/v1/backups/{backup.pk}/verify/", token).status_code == 202
    shown = client.get(f"/api/v1/backups/{backup.pk}/", **auth(token)).json()
    assert shown["verified_ok"] is False and shown["verify_detail"]


def test_a_read_token_downloads_nothing_even_for_an_operator(client, django_user_model, team, box):
    backup = _finished(box)
    reader = token_for(member(django_user_model, "ops", team, "operator"), "read")
    refused = client.get(f"/api/v1/backups/{backup.pk}/download/", **auth(reader))
    assert refused.status_code == 403 and "scope read" in refused.json()["detail"]
    assert not AuditEvent.objects.filter(action="backup.downloaded").exists()
    assert client.get(f"/api/v1/backups/{backup.pk}/", **auth(reader)).json()["status"] == "done"


def test_restore_into_a_new_sandbox_is_202_with_the_restores_url(client, django_user_model, team, box):
    backup = _finished(box)
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    answer = post_json(client, f"/api/v1/backups/{backup.pk}/restore/", token, {"into": "new", "new_name": "copy", "team": team.pk})
    assert answer.status_code == 202, answer.content
    restore = Restore.objects.get()
    assert answer.json()["url"] == f"/api/v1/restores/{restore.pk}/" and restore.into_new
    shown = client.get(answer.json()["url"], **auth(token)).json()
    assert shown["status"] == "running" and shown["sandbox"] == Sandbox.objects.get(name="copy").pk
    assert _via_api(AuditEvent.objects.get(action="backup.restore_requested"), token)
    assert client.get(f"/api/v1/backups/{backup.pk}/", **auth(token)).json()["restores"][0]["id"] == restore.pk
    stranger = token_for(member(django_user_model, "stranger", Team.objects.create(name="O", slug="o"), "admin"))
    assert client.get(answer.json()["url"], **auth(stranger)).status_code == 404


def test_restore_refusals_are_the_pages(client, django_user_model, team, box):
    backup = _finished(box)
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    wrong_name = post_json(client, f"/api/v1/backups/{backup.pk}/restore/", token, {"into": "self", "confirm_name": "nope"})
    assert wrong_name.status_code == 400 and "Type keeper exactly" in wrong_name.json()["confirm_name"][0]
    no_name = post_json(client, f"/api/v1/backups/{backup.pk}/restore/", token, {"into": "new", "team": team.pk})
    assert no_name.status_code == 400 and "new_name" in no_name.json()
    taken = post_json(client, f"/api/v1/backups/{backup.pk}/restore/", token, {"into": "new", "new_name": "keeper", "team": team.pk})
    assert taken.status_code == 400 and taken.json()["new_name"]
    Sandbox.objects.filter(pk=box.pk).update(pending_action="stop")
    busy = post_json(client, f"/api/v1/backups/{backup.pk}/restore/", token, {"into": "self", "confirm_name": "keeper"})
    assert busy.status_code == 409
    assert not Restore.objects.exists()


def _import_body(team, data: bytes, name: str = "made-elsewhere.tar.gz") -> bytes:
    return encode_multipart(BOUNDARY, {"team": str(team.pk), "archive": SimpleUploadedFile(name, data)})


def test_an_import_is_written_checked_and_read_at_its_url(
    client, django_user_model, team, tmp_path, eager_tasks, django_capture_on_commit_callbacks
):
    hostile_archive(tmp_path / "ok.tar.gz", [archive_member("workspace/Projects/a", b"hello")], config=CONFIG)
    data = (tmp_path / "ok.tar.gz").read_bytes()
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.generic("POST", "/api/v1/backups/import/", _import_body(team, data), content_type=MULTIPART_CONTENT, **auth(token))
    assert answer.status_code == 202, answer.content
    backup = Backup.objects.get(kind="imported")
    assert backup.path.read_bytes() == data and backup.sha256 == hashlib.sha256(data).hexdigest()
    shown = client.get(answer.json()["url"], **auth(token)).json()
    assert shown["status"] == "done" and shown["verified_ok"] is True, shown
    assert _via_api(AuditEvent.objects.get(action="backup.imported"), token)


def test_an_import_keeps_the_pages_limits(client, django_user_model, team, settings):
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    before = set(settings.BACKUP_ROOT.iterdir()) if settings.BACKUP_ROOT.exists() else set()
    settings.BACKUP_IMPORT_MAX_BYTES = 1000
    body = _import_body(team, b"x" * 5000)
    post = lambda **extra: client.generic("POST", "/api/v1/backups/import/", body, content_type=MULTIPART_CONTENT, **auth(token), **extra)  # noqa: E731
    too_big = post()
    assert too_big.status_code == 413 and "larger than the limit of 1000 bytes" in too_big.json()["detail"]
    settings.BACKUP_IMPORT_MAX_BYTES = 2**30
    short = post(CONTENT_LENGTH=str(len(body) - 100))
    assert short.status_code == 400 and "stopped short" in short.json()["detail"]
    chunked = post(CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked")
    assert chunked.status_code == 411 and "Content-Length" in chunked.json()["detail"]
    json_body = post_json(client, "/api/v1/backups/import/", token, {"team": team.pk})
    assert json_body.status_code == 415 and "multipart/form-data" in json_body.json()["detail"]
    viewer = token_for(member(django_user_model, "eyes", team, "viewer"), "admin")
    refused = client.generic("POST", "/api/v1/backups/import/", _import_body(team, b"abc"), content_type=MULTIPART_CONTENT, **auth(viewer))
    assert refused.status_code == 400 and refused.json()["team"]  # as the page's form: not a team the viewer may import into
    assert not Backup.objects.exists()
    assert (set(settings.BACKUP_ROOT.iterdir()) if settings.BACKUP_ROOT.exists() else set()) == before


def test_delete_is_for_admins_and_never_evidence(client, django_user_model, team, box):
    backup = _finished(box)
    operator = token_for(member(django_user_model, "ops", team, "operator"), "admin")
    assert client.delete(f"/api/v1/backups/{backup.pk}/", **auth(operator)).status_code == 403
    Backup.objects.filter(pk=backup.pk).update(kind="evidence")
    admin = token_for(member(django_user_model, "boss", team, "admin"), "admin")
    assert client.delete(f"/api/v1/backups/{backup.pk}/", **auth(admin)).status_code == 409
    Backup.objects.filter(pk=backup.pk).update(kind="manual")
    assert client.delete(f"/api/v1/backups/{backup.pk}/", **auth(admin)).status_code == 204
    assert not Backup.objects.filter(pk=backup.pk).exists()
    assert _via_api(AuditEvent.objects.get(action="backup.deleted"), admin)


@pytest.mark.django_db(transaction=True)  # the task is sent once the claim commits
def test_with_the_queue_down_a_backup_and_a_verify_are_503_and_nothing_is_under_way(client, django_user_model, team, box, broker_down):
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    answer = post_json(client, "/api/v1/backups/", token, {"sandbox": box.pk})
    assert answer.status_code == 503 and "not reachable" in answer.json()["detail"] and answer["Retry-After"]
    backup = Backup.objects.get(sandbox=box)
    assert answer.json()["url"] == f"/api/v1/backups/{backup.pk}/" and backup.status == "failed"
    assert Sandbox.objects.get(pk=box.pk).pending_action == ""  # the claim released: nothing stuck
    finished = _finished(box)
    verify = post_json(client, f"/api/v1/backups/{finished.pk}/verify/", token)
    assert verify.status_code == 503 and "not reachable" in verify.json()["detail"]
    restore = post_json(client, f"/api/v1/backups/{finished.pk}/restore/", token, {"into": "self", "confirm_name": box.name})
    assert restore.status_code == 503 and "not reachable" in restore.json()["detail"]
    assert Restore.objects.get().status in ("failed", "refused")
    assert Sandbox.objects.get(pk=box.pk).pending_action == ""


def test_a_backup_on_an_agents_host_is_asked_of_that_host_and_refusals_say_why(
    client, django_user_model, team, box, broker_down, monkeypatch
):
    """A backup written on a host agent's machine is not on the panel's disk: the API, as the
    page, has that host make it ready and streams it from its engine (tests/hosts/
    test_move_host.py does it for real); while its engine or the queue does not answer, 503
    with Retry-After, and nothing is audited as downloaded."""
    from backups.services import downloads
    from hosts.models import Host
    from sandboxes.engine import EngineUnavailable

    finished = _finished(box)
    far = Host.objects.create(name="far", agent=True, panel_url="tcp://198.18.0.9:2376", memory_mb=1024, disk_mb=1024)
    Sandbox.objects.filter(pk=box.pk).update(host=far)
    finished.path.unlink()  # on far's disk, not here
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    url = f"/api/v1/backups/{finished.pk}/download/"
    monkeypatch.setattr(downloads, "staged_stream", lambda backup: None)  # not staged there yet
    answer = client.get(url, **auth(token))
    assert answer.status_code == 503 and "not prepared" in answer.json()["detail"] and answer["Retry-After"]
    assert answer.json()["url"] == url

    def unreachable(backup):
        raise EngineUnavailable("far's engine does not answer")

    monkeypatch.setattr(downloads, "staged_stream", unreachable)
    answer = client.get(url, **auth(token))
    assert answer.status_code == 503 and "cannot be read from its host now" in answer.json()["detail"]
    assert not AuditEvent.objects.filter(action="backup.downloaded").exists()
