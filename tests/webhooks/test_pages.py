"""The team's webhooks page: team admins list, add, disable, rotate, delete and redeliver, each
audited; operators and viewers are refused (403) and change nothing; non-members see no team."""

import pytest
from django.core.exceptions import PermissionDenied

from audit.models import AuditEvent
from sandboxes.secrets import vault
from teams.models import Membership
from webhooks import services
from webhooks.models import Delivery, Webhook

from .conftest import declare, superuser

pytestmark = pytest.mark.django_db(transaction=True)
ADD = {"url": "http://127.0.0.1:9/hook", "events": ["incident.declared", "backup.failed"], "allow_private": "on"}


def page(team) -> str:
    return f"/teams/{team.slug}/webhooks/"


def member(django_user_model, team, role, name):
    user = django_user_model.objects.create_user(name, "", f"pw-{name}")
    Membership.objects.create(user=user, team=team, role=role)
    return user


def test_an_admin_adds_a_webhook_and_sees_its_secret_once(client, team, team_admin):
    client.force_login(team_admin)
    refused = client.post(page(team), ADD)  # a private address: the panel's administrators only
    assert refused.status_code == 403 and "superusers" in refused.content.decode() and not Webhook.objects.exists()
    assert "Allow private addresses" not in client.get(page(team)).content.decode()
    root = superuser()
    client.force_login(root)
    answer = client.post(page(team), ADD)
    assert answer.status_code == 200 and answer["Cache-Control"] == "no-store"
    webhook = Webhook.objects.get()
    secret = vault.unseal(webhook.secret_sealed)
    assert secret.startswith("whsec_") and secret in answer.content.decode()
    assert (webhook.events, webhook.allow_private, webhook.created_by) == (["incident.declared", "backup.failed"], True, root)
    client.force_login(team_admin)
    assert "Refuse private addresses" in client.get(page(team)).content.decode()  # narrowing it is theirs
    again = client.get(page(team)).content.decode()
    assert secret not in again and "http://127.0.0.1:9/hook" in again
    event = AuditEvent.objects.get(action="webhook.created")
    assert event.team_id == team.pk and "/hook" not in event.target, "the URL's path stays out of the trail"
    assert event.details == {"events": ["incident.declared", "backup.failed"], "allow_private": True}
    assert f'href="{page(team)}"' in client.get(f"/teams/{team.slug}/").content.decode()


def test_a_private_url_without_the_tick_is_a_form_error(client, team, team_admin):
    client.force_login(team_admin)
    answer = client.post(page(team), {**ADD, "allow_private": ""})
    assert answer.status_code == 400 and "127.0.0.0/8" in answer.content.decode()
    answer = client.post(page(team), {"url": "ftp://x/", "events": ["nope"]})
    assert answer.status_code == 400
    assert not Webhook.objects.exists() and not AuditEvent.objects.filter(action__startswith="webhook.").exists()


@pytest.mark.parametrize("role", [Membership.Role.OPERATOR, Membership.Role.VIEWER])
def test_operators_and_viewers_cannot_touch_webhooks(client, django_user_model, team, team_admin, queued, role):
    webhook = services.webhook_create(actor=team_admin, team=team, url="http://198.18.0.1/", chosen_events=["incident.declared"]).webhook
    declare(team)
    delivery = Delivery.objects.get()
    user = member(django_user_model, team, role, f"a-{role}")
    client.force_login(user)
    before = (AuditEvent.objects.count(), Webhook.objects.count(), Delivery.objects.count())
    assert client.get(page(team)).status_code == 403
    assert client.post(page(team), ADD).status_code == 403
    for op in ("disable", "rotate", "delete", "allow_private"):
        assert client.post(f"{page(team)}{webhook.pk}/", {"op": op}).status_code == 403
    assert client.post(f"{page(team)}{webhook.pk}/deliveries/{delivery.pk}/redeliver/").status_code == 403
    assert (AuditEvent.objects.count(), Webhook.objects.count(), Delivery.objects.count()) == before
    webhook.refresh_from_db()
    assert webhook.enabled and not webhook.allow_private and webhook.secret_rotated_at is None
    assert f'href="{page(team)}"' not in client.get(f"/teams/{team.slug}/").content.decode()
    with pytest.raises(PermissionDenied):  # the service refuses too, whatever the page
        services.webhook_create(actor=user, team=team, url="http://198.18.0.1/", chosen_events=["incident.declared"])


def test_a_non_member_sees_no_team(client, django_user_model, team, team_admin, other_team):
    outsider = member(django_user_model, other_team, Membership.Role.ADMIN, "outsider")
    webhook = services.webhook_create(actor=team_admin, team=team, url="http://198.18.0.1/", chosen_events=["incident.declared"]).webhook
    client.force_login(outsider)
    assert client.get(page(team)).status_code == 404
    assert client.post(f"{page(team)}{webhook.pk}/", {"op": "delete"}).status_code == 404
    # Another team's admin cannot reach it through their own team's address either.
    assert client.post(f"{page(other_team)}{webhook.pk}/", {"op": "delete"}).status_code == 404
    assert Webhook.objects.filter(pk=webhook.pk).exists()


def test_an_admin_disables_rotates_redelivers_and_deletes(client, team, team_admin, queued):
    new = services.webhook_create(actor=team_admin, team=team, url="http://198.18.0.1/", chosen_events=["incident.declared"])
    webhook = new.webhook
    declare(team)
    delivery = Delivery.objects.get()
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.FAILED)
    client.force_login(team_admin)
    base = f"{page(team)}{webhook.pk}/"
    assert client.post(base, {"op": "disable"}).status_code == 302
    assert not Webhook.objects.get(pk=webhook.pk).enabled
    assert client.post(f"{base}deliveries/{delivery.pk}/redeliver/").status_code == 302  # refused: disabled
    assert Delivery.objects.count() == 1
    client.post(base, {"op": "enable"})
    rotated = client.post(base, {"op": "rotate"})
    assert rotated.status_code == 200 and rotated["Cache-Control"] == "no-store"
    secret = vault.unseal(Webhook.objects.get(pk=webhook.pk).secret_sealed)
    assert secret != new.secret and secret in rotated.content.decode()
    queued.clear()
    assert client.post(f"{base}deliveries/{delivery.pk}/redeliver/").status_code == 302
    again = Delivery.objects.exclude(pk=delivery.pk).get()
    assert (again.event_id, again.payload, again.status) == (delivery.event_id, delivery.payload, Delivery.Status.PENDING)
    assert queued == [(again.pk, 0.0)]
    assert client.post(base, {"op": "nonsense"}).status_code == 404
    assert client.post(base, {"op": "delete"}).status_code == 302
    assert not Webhook.objects.exists() and not Delivery.objects.exists()
    actions = list(AuditEvent.objects.filter(action__startswith="webhook.").order_by("seq").values_list("action", flat=True))
    assert actions == [
        "webhook.created",
        "webhook.disabled",
        "webhook.enabled",
        "webhook.secret_rotated",
        "webhook.redelivered",
        "webhook.deleted",
    ]
    assert all(e.actor_id == team_admin.pk for e in AuditEvent.objects.filter(action__startswith="webhook."))
