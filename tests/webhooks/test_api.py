"""The webhook endpoints: what the page does, through the same services: team admins with an
admin-scope token only; the secret in the create's and the rotation's answers only; the same
URL rule (a private address is a 400 unless allowed); every write audited as the token's."""

import pytest

from audit.models import AuditEvent
from sandboxes.secrets import vault
from teams.models import Membership
from tests.api.helpers import auth, member, post_json, token_for
from webhooks.models import Delivery, Webhook

from .conftest import declare, superuser

pytestmark = pytest.mark.django_db(transaction=True)
NEW = {"url": "http://198.18.0.1/hook", "events": ["incident.declared"]}


def test_an_admin_token_makes_lists_changes_and_deletes_a_webhook(client, team, team_admin, queued):
    token = token_for(team_admin)
    made = post_json(client, "/api/v1/webhooks/", token, {**NEW, "team": team.pk})
    assert made.status_code == 201, made.content
    body = made.json()
    webhook = Webhook.objects.get()
    assert body["secret"] == vault.unseal(webhook.secret_sealed) and made["Location"] == f"/api/v1/webhooks/{webhook.pk}/"
    listed = client.get("/api/v1/webhooks/", **auth(token)).json()
    assert [w["id"] for w in listed] == [webhook.pk] and body["secret"] not in str(listed)
    declare(team)
    detail = client.get(f"/api/v1/webhooks/{webhook.pk}/", **auth(token)).json()
    [delivery] = detail["deliveries"]
    assert delivery["event"] == "incident.declared" and delivery["status"] == "pending"
    changed = client.patch(f"/api/v1/webhooks/{webhook.pk}/", {"enabled": False}, content_type="application/json", **auth(token))
    assert changed.status_code == 200 and changed.json()["enabled"] is False
    refused = post_json(client, f"/api/v1/webhooks/{webhook.pk}/deliveries/{delivery['id']}/redeliver/", token)
    assert refused.status_code == 409
    client.patch(f"/api/v1/webhooks/{webhook.pk}/", {"enabled": True}, content_type="application/json", **auth(token))
    again = post_json(client, f"/api/v1/webhooks/{webhook.pk}/deliveries/{delivery['id']}/redeliver/", token)
    assert again.status_code == 202 and Delivery.objects.count() == 2
    rotated = post_json(client, f"/api/v1/webhooks/{webhook.pk}/rotate-secret/", token)
    assert rotated.status_code == 200 and rotated.json()["secret"] not in (body["secret"], "")
    assert client.delete(f"/api/v1/webhooks/{webhook.pk}/", **auth(token)).status_code == 204
    assert not Webhook.objects.exists()
    writes = AuditEvent.objects.filter(action__startswith="webhook.")
    assert writes.count() == 6 and all(e.details.get("via") == "api" for e in writes)


def test_a_private_url_is_a_400_unless_allowed(client, team, team_admin):
    token = token_for(team_admin)
    refused = post_json(client, "/api/v1/webhooks/", token, {**NEW, "url": "http://127.0.0.1:9/", "team": team.pk})
    assert refused.status_code == 400 and "127.0.0.0/8" in str(refused.json()["url"])
    bad = post_json(client, "/api/v1/webhooks/", token, {**NEW, "events": ["sandbox.exploded"], "team": team.pk})
    assert bad.status_code == 400
    private = {**NEW, "url": "http://127.0.0.1:9/", "team": team.pk, "allow_private": True}
    refused = post_json(client, "/api/v1/webhooks/", token, private)  # lifting the rule: superusers only
    assert refused.status_code == 403 and "superusers" in refused.json()["detail"] and not Webhook.objects.exists()
    allowed = post_json(client, "/api/v1/webhooks/", token_for(superuser()), private)
    assert allowed.status_code == 201
    webhook = Webhook.objects.get()
    assert webhook.allow_private
    # A team admin's PATCH that turns it on again (with another change) is refused whole.
    client.patch(f"/api/v1/webhooks/{webhook.pk}/", {"allow_private": False}, content_type="application/json", **auth(token))
    both = client.patch(
        f"/api/v1/webhooks/{webhook.pk}/", {"allow_private": True, "enabled": False}, content_type="application/json", **auth(token)
    )
    assert both.status_code == 403
    webhook.refresh_from_db()
    assert (webhook.allow_private, webhook.enabled) == (False, True)


@pytest.mark.parametrize(
    ("role", "scope"),
    [
        (Membership.Role.OPERATOR, "admin"),
        (Membership.Role.VIEWER, "admin"),
        (Membership.Role.ADMIN, "operate"),
        (Membership.Role.ADMIN, "read"),
    ],
)
def test_operators_viewers_and_narrow_tokens_are_refused(client, django_user_model, team, team_admin, role, scope):
    webhook = Webhook.objects.create(team=team, url="http://198.18.0.1/", events=["backup.failed"], secret_sealed="x", created_by_name="t")
    token = token_for(member(django_user_model, f"u-{role}-{scope}", team, role), scope)
    before = AuditEvent.objects.filter(action__startswith="webhook.").count()
    assert post_json(client, "/api/v1/webhooks/", token, {**NEW, "team": team.pk}).status_code == 403
    assert client.get(f"/api/v1/webhooks/{webhook.pk}/", **auth(token)).status_code == 403
    assert client.delete(f"/api/v1/webhooks/{webhook.pk}/", **auth(token)).status_code == 403
    assert post_json(client, f"/api/v1/webhooks/{webhook.pk}/rotate-secret/", token).status_code == 403
    assert client.get("/api/v1/webhooks/", **auth(token)).json() == []
    assert Webhook.objects.count() == 1 and AuditEvent.objects.filter(action__startswith="webhook.").count() == before


def test_another_teams_webhook_is_not_found(client, django_user_model, team, other_team, team_admin):
    webhook = Webhook.objects.create(team=team, url="http://198.18.0.1/", events=["backup.failed"], secret_sealed="x", created_by_name="t")
    token = token_for(member(django_user_model, "outsider", other_team, Membership.Role.ADMIN))
    assert client.get(f"/api/v1/webhooks/{webhook.pk}/", **auth(token)).status_code == 404
    assert client.get("/api/v1/webhooks/nonsense/", **auth(token)).status_code == 404
    made = post_json(client, "/api/v1/webhooks/", token, {**NEW, "team": team.pk})
    assert made.status_code == 400 and made.json() == {"team": ["No such team."]}
