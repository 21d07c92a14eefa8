"""The sandbox page's Disk and checkpoints card, on the real engine: what it shows, what each
role may do, and that a bad value is a message that changes nothing."""

import pytest

from audit.models import AuditEvent
from sandboxes.models import Sandbox
from storage.models import Checkpoint
from teams.models import Membership

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def test_the_card_shows_use_and_checkpoints_and_its_forms_act(client, admin_user, make_sandbox, clean_docker, django_user_model, team):
    sandbox = make_sandbox("card", disk_mb=300)
    client.force_login(admin_user)
    page = client.get(f"/sandboxes/{sandbox.pk}/")
    assert page.status_code == 200 and 'id="storage-card"' in page.content.decode()
    card = client.get(f"/sandboxes/{sandbox.pk}/storage/").content.decode()
    assert "of 300.0\xa0MB used" in card and "No checkpoint yet" in card and 'id="checkpoint-now"' in card

    page = client.post(f"/sandboxes/{sandbox.pk}/checkpoints/new/", {"label": "first"}, follow=True)
    assert "Checkpoint " in page.content.decode()
    made = Checkpoint.objects.get(sandbox=sandbox)
    assert made.label == "first" and made.created_by_name == admin_user.username
    assert "first" in client.get(f"/sandboxes/{sandbox.pk}/storage/").content.decode()

    page = client.post(f"/sandboxes/{sandbox.pk}/storage/quota/", {"disk_mb": "ten"}, follow=True)
    assert "whole number" in page.content.decode()
    page = client.post(f"/sandboxes/{sandbox.pk}/storage/quota/", {"disk_mb": "10"}, follow=True)
    assert "from 64 to" in page.content.decode()
    assert Sandbox.objects.get(pk=sandbox.pk).disk_mb == 300
    client.post(f"/sandboxes/{sandbox.pk}/storage/quota/", {"disk_mb": "500"})
    assert Sandbox.objects.get(pk=sandbox.pk).disk_mb == 500

    page = client.post(f"/sandboxes/{sandbox.pk}/checkpoints/{made.pk}/rollback/", follow=True)
    assert "Rolled back to" in page.content.decode()
    assert Sandbox.objects.get(pk=sandbox.pk).status == "running"
    assert client.post(f"/sandboxes/{sandbox.pk}/checkpoints/999999/rollback/").status_code == 404

    viewer = django_user_model.objects.create_user("watcher", password="x")
    Membership.objects.create(user=viewer, team=team, role="viewer")
    client.force_login(viewer)
    card = client.get(f"/sandboxes/{sandbox.pk}/storage/").content.decode()
    assert "used" in card and "checkpoint-now" not in card and "Roll back" not in card
    assert client.post(f"/sandboxes/{sandbox.pk}/checkpoints/new/", {"label": "x"}).status_code == 403
    assert client.post(f"/sandboxes/{sandbox.pk}/checkpoints/{made.pk}/delete/").status_code == 403
    assert Checkpoint.objects.filter(sandbox=sandbox).count() == 2
    outsider = django_user_model.objects.create_user("outsider", password="x")
    client.force_login(outsider)
    assert client.get(f"/sandboxes/{sandbox.pk}/storage/").status_code == 404

    client.force_login(admin_user)
    client.post(f"/sandboxes/{sandbox.pk}/checkpoints/{made.pk}/delete/")
    assert not Checkpoint.objects.filter(pk=made.pk).exists()
    actions = set(AuditEvent.objects.filter(target="card").values_list("action", flat=True))
    assert {"sandbox.checkpoint", "sandbox.rollback", "sandbox.disk_quota_changed", "sandbox.checkpoint_deleted"} <= actions
