"""The sandbox page's Disk and checkpoints card, on the real engine: what it shows, what each
role may do, and that a bad value is a message that changes nothing."""

from datetime import timedelta

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


def test_checkpoints_are_kept_by_the_sandboxes_own_rule_like_scheduled_backups_and_never_while_held(
    client, admin_user, make_sandbox, clean_docker, settings
):
    from storage import services as storage

    settings.SANDBOX_KEEP_CHECKPOINTS = 3
    sandbox = make_sandbox("kept")
    client.force_login(admin_user)
    mine = [storage.checkpoint_create(actor=admin_user, sandbox=sandbox, label=f"c{n}") for n in range(3)]
    auto = storage.checkpoint_create(actor=admin_user, sandbox=sandbox, label="before a rollback", automatic=True)
    # Over the panel's three: the one the panel took itself goes first, though it is the newest.
    assert not Checkpoint.objects.filter(pk=auto.pk).exists() and not storage.checkpoint_path(auto).exists()

    # Bad values are messages that change nothing.
    for bad in ({"keep_last": "0"}, {"keep_last": "many"}, {"keep_days": "99999"}, {"keep_last": "1e3"}):
        page = client.post(f"/sandboxes/{sandbox.pk}/checkpoints/retention/", bad, follow=True).content.decode()
        assert "whole number" in page or "from 1 to" in page, bad
    assert Checkpoint.objects.filter(sandbox=sandbox).count() == 3
    assert Sandbox.objects.get(pk=sandbox.pk).checkpoint_keep_last is None

    # Keep the last one, and those younger than a day: all three are a minute old, all stay.
    client.post(f"/sandboxes/{sandbox.pk}/checkpoints/retention/", {"keep_last": "1", "keep_days": "1"})
    assert Checkpoint.objects.filter(sandbox=sandbox).count() == 3
    # The oldest made two days old: the count keeps the newest (c2), the age c1; c0 goes.
    Checkpoint.objects.filter(pk=mine[0].pk).update(created_at=mine[0].created_at - timedelta(days=2))
    held = Sandbox.objects.get(pk=sandbox.pk)
    Sandbox.objects.filter(pk=sandbox.pk).update(on_hold=True)  # an incident holds it: nothing goes
    assert storage.rotate(held) == 0 and Checkpoint.objects.filter(sandbox=sandbox).count() == 3
    Sandbox.objects.filter(pk=sandbox.pk).update(on_hold=False)
    page = client.post(f"/sandboxes/{sandbox.pk}/checkpoints/retention/", {"keep_last": "1", "keep_days": "1"}, follow=True)
    assert "1 went" in page.content.decode()
    assert [c.label for c in Checkpoint.objects.filter(sandbox=sandbox)] == ["c2", "c1"]
    assert not storage.checkpoint_path(mine[0]).exists()
    changed = AuditEvent.objects.filter(target="kept", action="sandbox.checkpoint_retention").order_by("seq").last()
    assert changed.details == {"keep_last": 1, "keep_days": 1}
    card = client.get(f"/sandboxes/{sandbox.pk}/storage/").content.decode()
    assert 'name="keep_last" value="1"' in card and 'name="keep_days" value="1"' in card
