"""Roles mean something: viewer < operator (lifecycle) < team admin (destroy, members)."""

import pytest

from audit.models import AuditEvent
from sandboxes.models import Sandbox
from teams.models import Membership

pytestmark = pytest.mark.django_db


def member(django_user_model, name, team, role):
    user = django_user_model.objects.create_user(name, password="pw-123456789")
    Membership.objects.create(user=user, team=team, role=role)
    return user


def test_destroy_needs_the_team_admin_role(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("guarded")
    operator = member(django_user_model, "op", team, "operator")
    client.force_login(operator)
    assert 'name="confirm_name"' not in client.get(f"/sandboxes/{sandbox.pk}/").content.decode()
    assert client.post(f"/sandboxes/{sandbox.pk}/destroy/", {"confirm_name": "guarded"}).status_code == 403
    assert Sandbox.objects.get(pk=sandbox.pk).status == "running"
    admin = member(django_user_model, "teamadmin", team, "admin")
    client.force_login(admin)
    assert 'name="confirm_name"' in client.get(f"/sandboxes/{sandbox.pk}/").content.decode()
    assert client.post(f"/sandboxes/{sandbox.pk}/destroy/", {"confirm_name": "guarded"}).status_code == 302
    assert Sandbox.objects.get(pk=sandbox.pk).pending_action == "destroy"


def test_team_admins_manage_members_and_others_cannot(client, django_user_model, team):
    admin = member(django_user_model, "lead", team, "admin")
    dev = django_user_model.objects.create_user("dev", password="pw-123456789")
    client.force_login(admin)
    url = f"/teams/{team.slug}/members/"
    assert client.post(url, {"username": "dev", "role": "operator"}).status_code == 302
    assert Membership.objects.get(user=dev, team=team).role == "operator"
    client.post(url, {"username": "dev", "role": "viewer"})
    assert Membership.objects.get(user=dev, team=team).role == "viewer"
    events = list(AuditEvent.objects.filter(action="team.member_set").order_by("seq").values_list("details", "team_id"))
    assert events == [
        ({"user": "dev", "from": None, "to": "operator"}, team.pk),
        ({"user": "dev", "from": "operator", "to": "viewer"}, team.pk),
    ]
    client.force_login(dev)
    assert client.post(url, {"username": "dev", "role": "admin"}).status_code == 403
    assert Membership.objects.get(user=dev, team=team).role == "viewer"
    assert "Add a member" not in client.get(f"/teams/{team.slug}/").content.decode()


def test_a_team_always_keeps_an_admin(client, django_user_model, team):
    admin = member(django_user_model, "only", team, "admin")
    client.force_login(admin)
    url = f"/teams/{team.slug}/members/"
    page = client.post(url, {"username": "only", "role": "operator"}, follow=True).content.decode()
    assert "last admin" in page
    client.post(url, {"username": "only", "remove": "1"})
    assert Membership.objects.get(user=admin, team=team).role == "admin"


def test_outsiders_do_not_see_a_team(client, django_user_model, team):
    from teams.models import Team

    other = Team.objects.create(name="Other", slug="other")
    outsider = member(django_user_model, "out", other, "admin")
    client.force_login(outsider)
    assert client.get(f"/teams/{team.slug}/").status_code == 404
    assert client.post(f"/teams/{team.slug}/members/", {"username": "out", "role": "admin"}).status_code == 404
