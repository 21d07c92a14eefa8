"""Teams and members through the API: the team pages' lists, and the admins' member changes,
refused exactly where the page refuses them (the table below runs both)."""

import pytest

from audit.models import AuditEvent
from teams.models import Membership, Team

from .helpers import auth, member, token_for

pytestmark = pytest.mark.django_db


def put(client, url, token, body):
    return client.put(url, body, content_type="application/json", **auth(token))


def test_teams_and_members_as_the_pages_show_them(client, django_user_model, team):
    Team.objects.create(name="Other", slug="other")
    viewer = member(django_user_model, "vic", team, "viewer")
    member(django_user_model, "ada", team, "admin")
    token = token_for(viewer, "read")
    listed = client.get("/api/v1/teams/", **auth(token)).json()
    assert [(t["slug"], t["role"]) for t in listed] == [("default", "viewer")]
    detail = client.get(f"/api/v1/teams/{team.pk}/", **auth(token)).json()
    assert [(m["username"], m["role"]) for m in detail["members"]] == [("ada", "admin"), ("vic", "viewer")]
    other = Team.objects.get(slug="other")
    for url in (f"/api/v1/teams/{other.pk}/", "/api/v1/teams/999999/", "/api/v1/teams/x/"):
        assert client.get(url, **auth(token)).status_code == 404


def test_an_admin_adds_changes_and_removes_members_audited_via_the_api(client, django_user_model, team):
    admin = member(django_user_model, "ada", team, "admin")
    django_user_model.objects.create_user("newbie", password="pw-123456789")
    token = token_for(admin, "admin")
    added = put(client, f"/api/v1/teams/{team.pk}/members/newbie/", token, {"role": "operator"})
    assert added.status_code == 200 and added.json() == {"username": "newbie", "role": "operator"}
    assert Membership.objects.get(team=team, user__username="newbie").role == "operator"
    assert put(client, f"/api/v1/teams/{team.pk}/members/newbie/", token, {"role": "viewer"}).status_code == 200
    assert Membership.objects.get(team=team, user__username="newbie").role == "viewer"
    assert client.delete(f"/api/v1/teams/{team.pk}/members/newbie/", **auth(token)).status_code == 204
    assert not Membership.objects.filter(team=team, user__username="newbie").exists()
    events = AuditEvent.objects.filter(action__startswith="team.member").order_by("seq")
    assert [e.action for e in events] == ["team.member_set", "team.member_set", "team.member_removed"]
    assert all(e.details["via"] == "api" and e.details["token"] == token[:12] for e in events)


def test_the_last_admin_stays_and_bad_input_changes_nothing(client, django_user_model, team):
    admin = member(django_user_model, "ada", team, "admin")
    token = token_for(admin, "admin")
    last = put(client, f"/api/v1/teams/{team.pk}/members/ada/", token, {"role": "viewer"})
    assert last.status_code == 409 and "last admin" in last.json()["detail"]
    assert client.delete(f"/api/v1/teams/{team.pk}/members/ada/", **auth(token)).status_code == 409
    assert put(client, f"/api/v1/teams/{team.pk}/members/ada/", token, {"role": "owner"}).status_code == 400
    assert put(client, f"/api/v1/teams/{team.pk}/members/ghost/", token, {"role": "viewer"}).status_code == 404
    assert Membership.objects.get(team=team, user=admin).role == "admin"
    assert not AuditEvent.objects.filter(action__startswith="team.member").exists()


ROLES = ("viewer", "operator", "admin")
CHANGES = (("add", "operator"), ("change", "viewer"), ("remove", None))


@pytest.mark.parametrize("scope", ["admin", "operate", "read"])
def test_member_changes_are_refused_where_the_page_refuses_them(client, django_user_model, team, scope):
    """Each role's change through the page, then (undone) through the API: the same effect, and
    a narrower scope only refuses more (a member change needs the admin scope)."""
    users = {role: member(django_user_model, f"u-{role}", team, role) for role in ROLES}
    target = django_user_model.objects.create_user("target", password="pw-123456789")
    table = []
    for role, user in users.items():
        token = token_for(user, scope)
        for change, new_role in CHANGES:
            Membership.objects.filter(user=target).delete()
            if change != "add":
                Membership.objects.create(user=target, team=team, role="operator")
            before = list(Membership.objects.filter(user=target).values_list("role", flat=True))
            client.force_login(user)
            form = {"username": "target", **({"role": new_role} if new_role else {"remove": "1"})}
            page = client.post(f"/teams/{team.slug}/members/", form)
            by_page = list(Membership.objects.filter(user=target).values_list("role", flat=True))
            client.logout()
            Membership.objects.filter(user=target).delete()
            Membership.objects.bulk_create([Membership(user=target, team=team, role=r) for r in before])
            url = f"/api/v1/teams/{team.pk}/members/target/"
            api = put(client, url, token, {"role": new_role}) if new_role else client.delete(url, **auth(token))
            by_api = list(Membership.objects.filter(user=target).values_list("role", flat=True))
            changed_by_page, changed_by_api = by_page != before, by_api != before
            assert (page.status_code == 403) == (not changed_by_page), (role, change, page.status_code)
            expected = changed_by_page and scope == "admin"
            assert changed_by_api == expected, (scope, role, change, api.status_code)
            assert api.status_code == (403 if not expected else (204 if change == "remove" else 200))
            table.append((role, change, changed_by_page, changed_by_api))
    assert {role for role, _c, by_page, _a in table if by_page} == {"admin"}
