"""The API's long jobs on the real engine: a backup written and downloaded byte for byte, its
restore into a new sandbox bringing the files back, and checkpoints taken, rolled back to and
deleted, each through the API and each audited as the token's. The worker's part is run
in-process (the task's own service), as the backups tests do."""

import pytest

from audit.models import AuditEvent
from backups import services as backups
from sandboxes.models import Sandbox
from storage import services as storage
from storage.models import Checkpoint

from .helpers import auth, member, post_json, token_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def _via(action: str, token: str) -> bool:
    event = AuditEvent.objects.filter(action=action).latest("pk")
    return event.details.get("via") == "api" and event.details.get("token") == token[:12]


def test_a_backup_downloads_byte_for_byte_and_restores_into_a_new_sandbox(
    client, django_user_model, team, make_sandbox, clean_docker, own_queue
):
    box = make_sandbox("api-kept")
    (box.workspace_path / "Projects" / "notes.txt").write_text("remember this\n")
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    answer = post_json(client, "/api/v1/backups/", token, {"sandbox": box.pk})
    assert answer.status_code == 202, answer.content
    backup_id = answer.json()["backup"]["id"]
    backups.backup_perform(backup_id=backup_id)  # the worker's part (its queue is the test's own: no worker takes it)
    shown = client.get(answer.json()["url"], **auth(token)).json()
    assert shown["status"] == "done", shown["detail"]
    download = client.get(shown["download"], **auth(token))
    body = b"".join(download.streaming_content)
    assert download.status_code == 200 and body == (backups.backup_root() / shown["file_name"]).read_bytes()
    assert len(body) == shown["size_bytes"] and _via("backup.downloaded", token)

    answer = post_json(client, f"/api/v1/backups/{backup_id}/restore/", token, {"into": "new", "new_name": "api-copy", "team": team.pk})
    assert answer.status_code == 202, answer.content
    backups.restore_perform(restore_id=answer.json()["restore"]["id"])
    restored = client.get(answer.json()["url"], **auth(token)).json()
    assert restored["status"] == "done", restored["detail"]
    copy = Sandbox.objects.get(name="api-copy")
    assert (copy.workspace_path / "Projects" / "notes.txt").read_text() == "remember this\n"
    assert _via("backup.restore_requested", token)


def test_checkpoints_are_taken_rolled_back_to_and_deleted_through_the_api(client, django_user_model, team, make_sandbox, clean_docker):
    box = make_sandbox("api-ckpt", disk_mb=300)
    notes = box.workspace_path / "Projects" / "notes.txt"
    notes.write_text("before\n")
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    made = post_json(client, "/api/v1/checkpoints/", token, {"sandbox": box.pk, "label": "first"})
    assert made.status_code == 201, made.content
    checkpoint = Checkpoint.objects.get(pk=made.json()["id"])
    assert checkpoint.label == "first" and _via("sandbox.checkpoint", token)
    listed = client.get("/api/v1/checkpoints/", {"sandbox": box.pk}, **auth(token)).json()
    assert [c["id"] for c in listed] == [checkpoint.pk] and listed[0]["size"] is not None

    notes.write_text("after\n")
    rolled = post_json(client, f"/api/v1/checkpoints/{checkpoint.pk}/rollback/", token)
    assert rolled.status_code == 200, rolled.content
    assert rolled.json()["sandbox"]["status"] == "running" and _via("sandbox.rollback", token)
    assert (Sandbox.objects.get(pk=box.pk).workspace_path / "Projects" / "notes.txt").read_text() == "before\n"
    before = Checkpoint.objects.get(pk=rolled.json()["before"]["id"])

    viewer = token_for(member(django_user_model, "eyes", team, "viewer"), "admin")
    assert client.delete(f"/api/v1/checkpoints/{before.pk}/", **auth(viewer)).status_code == 403
    assert client.delete(f"/api/v1/checkpoints/{before.pk}/", **auth(token)).status_code == 204
    assert not Checkpoint.objects.filter(pk=before.pk).exists() and not storage.checkpoint_path(before).exists()
    assert _via("sandbox.checkpoint_deleted", token)
