"""Personal API tokens: shown once, stored hashed, expiring, revocable, scoped, and audited."""

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from api.models import ApiToken
from audit.models import AuditEvent
from teams.models import Team

from .helpers import auth, member, post_json, token_for

pytestmark = pytest.mark.django_db


def make_on_page(client, name="ci", scope="operate", days="30"):
    return client.post("/account/api-tokens/", {"name": name, "scope": scope, "expires_in_days": days})


def test_a_token_is_shown_once_and_only_its_hash_is_kept(client, django_user_model, team):
    user = member(django_user_model, "dev", team, "operator")
    client.force_login(user)
    made = make_on_page(client)
    assert made.status_code == 200
    token = ApiToken.objects.get(user=user)
    secret = made.context["new"].secret
    assert secret.startswith(token.prefix + "_") and secret in made.content.decode()
    assert made["Cache-Control"] == "no-store"
    assert token.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(list(ApiToken.objects.values()))  # not stored anywhere in the row
    page = client.get("/account/api-tokens/").content.decode()
    assert token.prefix in page and secret not in page  # the list shows the prefix, never the secret again
    event = AuditEvent.objects.get(action="api_token.create")
    assert event.actor == user and event.details["token"] == token.prefix and event.details["scope"] == "operate"
    assert client.get("/api/v1/sandboxes/", **auth(secret)).status_code == 200


def test_the_expiry_is_required_and_at_most_a_year(client, django_user_model, team):
    client.force_login(member(django_user_model, "dev", team, "operator"))
    for days in ("", "0", "366", "99999999999999999999", "ten"):
        assert make_on_page(client, days=days).status_code == 400
    assert not ApiToken.objects.exists()
    assert make_on_page(client, days="365").status_code == 200
    token = ApiToken.objects.get()
    assert timedelta(days=364) < token.expires_at - timezone.now() <= timedelta(days=365)


def test_expired_revoked_and_wrong_tokens_get_401_with_the_reason(client, django_user_model, team):
    user = member(django_user_model, "dev", team, "viewer")
    secret = token_for(user, "read")
    token = ApiToken.objects.get(user=user)
    assert client.get("/api/v1/sandboxes/").status_code == 401
    wrong = client.get("/api/v1/sandboxes/", **auth(secret[:-1] + ("A" if secret[-1] != "A" else "B")))
    assert wrong.status_code == 401 and wrong.json()["detail"] == "Unknown token."
    assert client.get("/api/v1/sandboxes/", **auth("nonsense")).json()["detail"].startswith("Malformed token")
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = client.get("/api/v1/sandboxes/", **auth(secret))
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    assert expired["WWW-Authenticate"].startswith("Bearer")
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() + timedelta(days=1))
    assert client.get("/api/v1/sandboxes/", **auth(secret)).status_code == 200
    client.force_login(user)
    assert client.post(f"/account/api-tokens/{token.pk}/revoke/").status_code == 302
    revoked = client.get("/api/v1/sandboxes/", **auth(secret))
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    assert AuditEvent.objects.get(action="api_token.revoke").details == {"token": token.prefix}


def test_a_user_cannot_revoke_another_users_token(client, django_user_model, team):
    owner = member(django_user_model, "owner", team, "operator")
    secret = token_for(owner)
    client.force_login(member(django_user_model, "other", team, "admin"))
    client.post(f"/account/api-tokens/{ApiToken.objects.get().pk}/revoke/")
    assert ApiToken.objects.get().revoked_at is None
    assert client.get("/api/v1/sandboxes/", **auth(secret)).status_code == 200


def test_first_use_is_audited_once_and_every_event_names_the_token(
    client, django_user_model, team, make_sandbox, fake_engine, clean_workspace
):
    sandbox = make_sandbox("tokened")
    user = member(django_user_model, "dev", team, "operator")
    secret = token_for(user, "operate")
    prefix = ApiToken.objects.get().prefix
    for _ in range(3):
        assert client.get("/api/v1/sandboxes/", **auth(secret)).status_code == 200
    first = AuditEvent.objects.filter(action="api_token.first_use")
    assert first.count() == 1 and first.get().details == {"via": "api", "token": prefix} and first.get().actor == user
    assert ApiToken.objects.get().last_used_at is not None
    assert post_json(client, f"/api/v1/sandboxes/{sandbox.pk}/stop/", secret).status_code == 202
    stop = AuditEvent.objects.get(action="sandbox.stop")
    assert stop.actor == user and stop.details["via"] == "api" and stop.details["token"] == prefix
    assert stop.details["from"] == "running"  # the service's own details are kept
    # A page's event after the API call carries no token: the attribution ends with the request.
    client.force_login(user)
    client.post(f"/sandboxes/{sandbox.pk}/start/")  # refused (stop is pending), no event
    from sandboxes.models import Sandbox

    Sandbox.objects.filter(pk=sandbox.pk).update(pending_action="", status="stopped")
    client.post(f"/sandboxes/{sandbox.pk}/start/")
    assert "token" not in AuditEvent.objects.get(action="sandbox.start").details


def test_scopes_narrow_the_role(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("scoped")
    admin = member(django_user_model, "lead", team, "admin")
    read, operate, full = (token_for(admin, scope) for scope in ("read", "operate", "admin"))
    assert client.get(f"/api/v1/sandboxes/{sandbox.pk}/", **auth(read)).json()["actions"] == []
    assert "destroy" not in client.get(f"/api/v1/sandboxes/{sandbox.pk}/", **auth(operate)).json()["actions"]
    assert "destroy" in client.get(f"/api/v1/sandboxes/{sandbox.pk}/", **auth(full)).json()["actions"]
    refused = post_json(client, f"/api/v1/sandboxes/{sandbox.pk}/stop/", read)
    assert refused.status_code == 403 and "scope is read" in refused.json()["detail"]
    body = {"confirm_name": "scoped"}
    refused = post_json(client, f"/api/v1/sandboxes/{sandbox.pk}/destroy/", operate, body)
    assert refused.status_code == 403 and "allows at most operator" in refused.json()["detail"]
    create = {"team": team.pk, "name": "from-read"}
    assert post_json(client, "/api/v1/sandboxes/", read, create).status_code == 403
    from sandboxes.models import Sandbox

    assert Sandbox.objects.get(pk=sandbox.pk).pending_action == ""
    assert post_json(client, f"/api/v1/sandboxes/{sandbox.pk}/destroy/", full, body).status_code == 202
    assert Sandbox.objects.get(pk=sandbox.pk).pending_action == "destroy"


def test_a_scope_never_widens_the_role(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("narrow")
    viewer = member(django_user_model, "watcher", team, "viewer")
    secret = token_for(viewer, "admin")
    assert post_json(client, f"/api/v1/sandboxes/{sandbox.pk}/stop/", secret).status_code == 403
    assert client.get(f"/api/v1/sandboxes/{sandbox.pk}/", **auth(secret)).json()["actions"] == []


def test_making_a_token_needs_the_second_factor_where_the_team_requires_it(client, django_user_model):
    strict = Team.objects.create(name="Strict", slug="strict", require_second_factor=True)
    user = member(django_user_model, "dev", strict, "operator")
    client.force_login(user)
    answer = make_on_page(client)
    assert answer.status_code == 302 and answer["Location"].startswith("/2fa/")
    assert not ApiToken.objects.exists()
    # With a confirmed device whose code this session gave, it is made.
    device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
    session = client.session
    from django_otp import DEVICE_ID_SESSION_KEY

    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    assert make_on_page(client).status_code == 200
    assert ApiToken.objects.filter(user=user).count() == 1


def test_a_token_waits_for_a_second_factor_a_team_came_to_require(client, django_user_model, team):
    user = member(django_user_model, "dev", team, "operator")
    secret = token_for(user, "read")
    assert client.get("/api/v1/sandboxes/", **auth(secret)).status_code == 200
    Team.objects.filter(pk=team.pk).update(require_second_factor=True)
    refused = client.get("/api/v1/sandboxes/", **auth(secret))
    assert refused.status_code == 401 and "requires a second factor" in refused.json()["detail"]
    TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
    assert client.get("/api/v1/sandboxes/", **auth(secret)).status_code == 200


def test_the_api_takes_no_session(client, django_user_model, team):
    """Tokens only: a signed-in browser's cookie does not authenticate an API call, so another
    site cannot make one with it (no CSRF to forge)."""
    client.force_login(member(django_user_model, "dev", team, "admin"))
    assert client.get("/api/v1/sandboxes/").status_code == 401
    assert client.post("/api/v1/sandboxes/", {"team": team.pk, "name": "x"}, content_type="application/json").status_code == 401
