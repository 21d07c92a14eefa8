"""Every API action is refused exactly where the page refuses it: a table of role x state x
action, each run through the page (the existing view) and through the API with an admin-scope
token, then through narrower scopes, which may only refuse more."""

import pytest

from sandboxes import services
from sandboxes.models import Sandbox

from .helpers import member, post_json, token_for

pytestmark = pytest.mark.django_db

ROLES = ("viewer", "operator", "admin")
# (status, on hold by an incident, what holds its claim now)
STATES = (
    ("running", False, ""),
    ("stopped", False, ""),
    ("paused", False, ""),
    ("error", False, ""),
    ("running", True, ""),
    ("running", False, "backup"),
)
SCOPE_RANK = {"read": 1, "operate": 2, "admin": 3}
ROLE_RANK = {"viewer": 1, "operator": 2, "admin": 3}


def _reset(sandbox: Sandbox, state: tuple[str, bool, str]) -> Sandbox:
    status, on_hold, pending = state
    Sandbox.objects.filter(pk=sandbox.pk).update(status=status, on_hold=on_hold, pending_action=pending, claimed_at=None, status_detail="")
    sandbox.refresh_from_db()
    return sandbox


def _claimed(sandbox: Sandbox, action: str) -> bool:
    return Sandbox.objects.get(pk=sandbox.pk).pending_action == action


@pytest.mark.slow  # 144 cases, each through the page and the API: `make test`, not the fast tier
def test_page_and_api_allow_and_refuse_the_same_actions(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("parity")
    users = {role: member(django_user_model, f"u-{role}", team, role) for role in ROLES}
    tokens = {role: token_for(user, "admin") for role, user in users.items()}
    table = []
    for role in ROLES:
        for state in STATES:
            for action in Sandbox.Action.values:
                body = {"confirm_name": "parity"} if action == "destroy" else {}
                expected = action in services.allowed_actions(_reset(sandbox, state), role=role)

                client.force_login(users[role])
                page = client.post(f"/sandboxes/{sandbox.pk}/{action}/", body)
                by_page = _claimed(sandbox, action)
                assert page.status_code in (302, 403), (role, state, action, page.status_code)

                _reset(sandbox, state)
                client.logout()
                api = post_json(client, f"/api/v1/sandboxes/{sandbox.pk}/{action}/", tokens[role], body)
                by_api = _claimed(sandbox, action)
                assert (api.status_code == 202) == by_api and api.status_code in (202, 403, 409), api.content
                assert (api.status_code == 403) == (page.status_code == 403), (role, state, action)
                table.append((role, state, action, by_page, by_api, expected))
    mismatches = [t for t in table if not t[3] == t[4] == t[5]]
    assert not mismatches, mismatches
    assert len(table) == len(ROLES) * len(STATES) * len(Sandbox.Action.values)
    assert any(t[3] for t in table) and not all(t[3] for t in table)  # the table has both outcomes


@pytest.mark.parametrize("scope", ["read", pytest.param("operate", marks=pytest.mark.slow)])
def test_a_narrower_scope_only_refuses_more(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace, scope):
    sandbox = make_sandbox("narrowed")
    for role in ROLES:
        token = token_for(member(django_user_model, f"{scope}-{role}", team, role), scope)
        for state in STATES:
            for action in Sandbox.Action.values:
                body = {"confirm_name": "narrowed"} if action == "destroy" else {}
                capped = role if ROLE_RANK[role] <= SCOPE_RANK[scope] else ("viewer", "operator")[SCOPE_RANK[scope] - 1]
                expected = action in services.allowed_actions(_reset(sandbox, state), role=capped)
                api = post_json(client, f"/api/v1/sandboxes/{sandbox.pk}/{action}/", token, body)
                assert _claimed(sandbox, action) == expected == (api.status_code == 202), (scope, role, state, action, api.content)
                if scope == "read":
                    assert api.status_code == 403


def test_a_sandbox_on_an_unreachable_host_says_so_and_takes_no_action(
    client, django_user_model, team, make_sandbox, fake_engine, clean_workspace
):
    """As the dashboard shows it "unreachable" with the reason and offers nothing: the API says
    why (its status kept for when the host answers) and refuses the action with 409."""
    from datetime import timedelta

    from django.utils import timezone

    from hosts.models import Host
    from sandboxes.models import Sandbox

    from .helpers import member, post_json, token_for

    box = make_sandbox("far-api")
    far = Host.objects.create(name="far", docker_url="tcp://198.18.99.1:2376", last_heartbeat=timezone.now() - timedelta(minutes=5))
    Sandbox.objects.filter(pk=box.pk).update(host=far)
    token = token_for(member(django_user_model, "op-far", team, "admin"))
    shown = client.get(f"/api/v1/sandboxes/{box.pk}/", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert shown["status"] == "running" and shown["actions"] == []
    assert "unreachable" in shown["unreachable"] and "no heartbeat" in shown["unreachable"]
    refused = post_json(client, f"/api/v1/sandboxes/{box.pk}/stop/", token)
    assert refused.status_code == 409 and "unreachable" in refused.json()["detail"]
    assert Sandbox.objects.get(pk=box.pk).pending_action == ""
    listed = client.get("/api/v1/sandboxes/", HTTP_AUTHORIZATION=f"Bearer {token}").json()["results"]
    assert next(s for s in listed if s["id"] == box.pk)["unreachable"] == shown["unreachable"]
