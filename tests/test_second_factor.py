"""The optional second factor (TOTP): after the password, no page and no websocket answers until
the code is given; a team can require it; a password alone never replaces the authenticator."""

import pytest
from django.conf import settings as django_settings
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import AuditEvent
from teams.models import Membership, Team
from tests.test_web_security import ORIGIN, connects

pytestmark = pytest.mark.django_db
PASSWORD = "pw-second-factor-1"


def code(device: TOTPDevice, offset: int = 0) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=offset):06d}"


@pytest.fixture
def member(django_user_model):
    user = django_user_model.objects.create_user("alice", password=PASSWORD)
    team = Team.objects.get_or_create(slug="default", defaults={"name": "Default"})[0]
    Membership.objects.create(user=user, team=team, role="admin")
    return user


def sign_in(client, user) -> None:
    response = client.post("/login/", {"username": user.get_username(), "password": PASSWORD})
    assert response.status_code == 302, response.content[:300]


def verified(client, user, name: str = "authenticator") -> TOTPDevice:
    """A confirmed authenticator `name` of `user`, and `client` signed in with the password and
    then its code."""
    device = TOTPDevice.objects.create(user=user, name=name, confirmed=True)
    sign_in(client, user)
    client.post("/2fa/verify/", {"token": code(device)})
    return device


def test_a_user_with_an_authenticator_needs_its_code_after_the_password(client, member):
    device = TOTPDevice.objects.create(user=member, name="authenticator", confirmed=True)
    sign_in(client, member)
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/2fa/verify/")
    assert client.get("/audit/").status_code == 302
    assert client.post("/2fa/verify/", {"token": "000000" if code(device) != "000000" else "111111"}).status_code == 200
    assert AuditEvent.objects.filter(action="auth.second_factor_failed", target="alice").exists()
    device.refresh_from_db()
    device.throttling_failure_count, device.throttling_failure_timestamp = 0, None  # the wait a failure set
    device.save()
    response = client.post("/2fa/verify/", {"token": code(device), "next": "/audit/"})
    assert response.status_code == 302 and response["Location"] == "/audit/"
    assert client.get("/").status_code == 200


def test_a_password_alone_never_replaces_or_removes_the_authenticator(client, member):
    TOTPDevice.objects.create(user=member, name="authenticator", confirmed=True)
    sign_in(client, member)
    response = client.get("/2fa/setup/")
    assert response.status_code == 302 and response["Location"].startswith("/2fa/verify/")
    assert client.post("/2fa/remove/").status_code == 302
    assert TOTPDevice.objects.filter(user=member, confirmed=True).count() == 1
    assert not TOTPDevice.objects.filter(user=member, confirmed=False).exists()


def test_a_team_that_requires_it_sends_members_to_set_it_up(client, member):
    Team.objects.filter(slug="default").update(require_second_factor=True)
    sign_in(client, member)
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/2fa/setup/"
    page = client.get("/2fa/setup/")
    assert page.status_code == 200 and b"totp-secret" in page.content
    device = TOTPDevice.objects.get(user=member, confirmed=False)
    response = client.post("/2fa/setup/", {"token": code(device)})
    assert response.status_code == 302
    assert TOTPDevice.objects.get(user=member).confirmed
    assert client.get("/").status_code == 200
    assert AuditEvent.objects.filter(action="auth.second_factor_enabled", target="alice").exists()
    assert client.post("/2fa/remove/").status_code == 302  # required: it stays
    assert TOTPDevice.objects.filter(user=member, confirmed=True).exists()


def test_only_team_admins_require_it_and_it_is_audited(client, member, django_user_model):
    operator = django_user_model.objects.create_user("bob", password=PASSWORD)
    Membership.objects.create(user=operator, team=Team.objects.get(slug="default"), role="operator")
    client.force_login(operator)
    assert client.post("/teams/default/second-factor/", {"require": "1"}).status_code == 403
    client.force_login(member)
    client.post("/teams/default/second-factor/", {"require": "1"})
    assert Team.objects.get(slug="default").require_second_factor
    assert AuditEvent.objects.filter(action="team.second_factor_required", target="default").exists()


def test_a_websocket_of_a_session_without_its_code_is_refused(in_memory_layer_for_otp, client, member):
    device = TOTPDevice.objects.create(user=member, name="authenticator", confirmed=True)
    sign_in(client, member)
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    assert connects(session, ORIGIN) is False
    client.post("/2fa/verify/", {"token": code(device)})
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    assert connects(session, ORIGIN) is True


# The second factor is read afresh on every request (teams.second_factor.missing): what changes it
# elsewhere counts at the next request of every session, never after some cache expires.


def test_a_session_verified_with_a_removed_authenticator_must_set_one_up_again_at_once(client, member):
    Team.objects.filter(slug="default").update(require_second_factor=True)
    device = verified(client, member)
    assert client.get("/").status_code == 200
    device.delete()  # revoked: by an admin, or from another session
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/2fa/setup/"


def test_a_session_verified_with_a_replaced_authenticator_must_give_the_new_code_at_once(client, member):
    old = verified(client, member, "old phone")
    assert client.get("/").status_code == 200
    old.delete()
    TOTPDevice.objects.create(user=member, name="new phone", confirmed=True)
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/2fa/verify/")


def test_an_authenticator_set_up_in_another_session_asks_this_one_for_its_code_at_once(client, member):
    sign_in(client, member)
    assert client.get("/").status_code == 200
    TOTPDevice.objects.create(user=member, name="authenticator", confirmed=True)
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/2fa/verify/")


def test_a_team_requiring_it_sends_a_signed_in_member_to_set_it_up_at_once(client, member):
    sign_in(client, member)
    assert client.get("/").status_code == 200
    Team.objects.filter(slug="default").update(require_second_factor=True)
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/2fa/setup/"


def test_signing_out_ends_a_verified_session_at_once(client, member):
    verified(client, member)
    assert client.get("/").status_code == 200
    client.post("/logout/")
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.fixture
def in_memory_layer_for_otp(settings, transactional_db):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
