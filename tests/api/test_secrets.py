"""Secrets through the API: names and metadata in, never a value out (not to admins, not in an
error, not in the audit trail), and changes refused exactly where the secrets pages refuse them."""

import json

import pytest

from audit.models import AuditEvent
from sandboxes import secrets
from sandboxes.models import Secret

from .helpers import auth, member, post_json, token_for

pytestmark = pytest.mark.django_db

VALUE = "hunter2-very-secret-\u00e9-value"


def patch(client, url, token, body):
    return client.patch(url, body, content_type="application/json", **auth(token))


def test_set_rotate_disable_delete_and_the_value_never_comes_back(
    client, django_user_model, team, make_sandbox, fake_engine, clean_workspace
):
    box = make_sandbox("vault")
    root = django_user_model.objects.create_superuser("root", "", "pw-123456789")
    token = token_for(root, "admin")
    answers = []
    made = post_json(client, f"/api/v1/sandboxes/{box.pk}/secrets/", token, {"name": "API_KEY", "value": VALUE, "delivery": "file"})
    answers.append(made)
    assert made.status_code == 201 and made.json()["created"] is True
    secret = Secret.objects.get(sandbox=box, name="API_KEY")
    assert secrets.unseal(secret.ciphertext) == VALUE and secret.delivery == "file"
    rotated = post_json(client, f"/api/v1/sandboxes/{box.pk}/secrets/", token, {"name": "API_KEY", "value": VALUE + "2"})
    answers.append(rotated)
    assert rotated.status_code == 200 and rotated.json()["created"] is False
    assert secrets.unseal(Secret.objects.get(pk=secret.pk).ciphertext) == VALUE + "2"
    url = f"/api/v1/sandboxes/{box.pk}/secrets/{secret.pk}/"
    disabled = patch(client, url, token, {"enabled": False})
    answers.append(disabled)
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False and not Secret.objects.get(pk=secret.pk).enabled
    answers.append(patch(client, url, token, {"value": VALUE + "3", "delivery": "env"}))
    assert secrets.unseal(Secret.objects.get(pk=secret.pk).ciphertext) == VALUE + "3"
    assert not Secret.objects.get(pk=secret.pk).enabled  # a rotation keeps it disabled
    # Refusals, each quoting the value it was sent somewhere if it could.
    answers.append(post_json(client, f"/api/v1/sandboxes/{box.pk}/secrets/", token, {"name": "1BAD", "value": VALUE}))
    answers.append(post_json(client, f"/api/v1/sandboxes/{box.pk}/secrets/", token, {"name": "HOME", "value": VALUE}))
    answers.append(post_json(client, f"/api/v1/sandboxes/{box.pk}/secrets/", token, {"name": "X", "value": VALUE, "delivery": VALUE}))
    answers.append(post_json(client, f"/api/v1/sandboxes/{box.pk}/secrets/", token, {"name": "X", "value": VALUE, VALUE: 1}))
    answers.append(post_json(client, f"/api/v1/sandboxes/{box.pk}/secrets/", token, {"name": "X", "value": VALUE * 3000}))
    answers.append(patch(client, url, token, {"delivery": "file"}))
    answers.append(patch(client, url, token, {"enabled": VALUE}))
    answers.append(patch(client, url, token, {"value": VALUE, "delivery": VALUE}))
    assert all(a.status_code == 400 for a in answers[4:]), [a.status_code for a in answers]
    answers.append(client.get(f"/api/v1/sandboxes/{box.pk}/secrets/", **auth(token)))
    assert [s["name"] for s in answers[-1].json()["secrets"]] == ["API_KEY"]
    team_made = post_json(client, f"/api/v1/teams/{team.pk}/secrets/", token, {"name": "SHARED", "value": VALUE})
    answers += [team_made, client.get(f"/api/v1/teams/{team.pk}/secrets/", **auth(token))]
    assert team_made.status_code == 201 and Secret.objects.filter(team=team, name="SHARED").exists()
    assert client.delete(url, **auth(token)).status_code == 204 and not Secret.objects.filter(pk=secret.pk).exists()
    for answer in answers:
        assert VALUE.encode() not in answer.content and b"hunter2" not in answer.content, answer.content
    events = AuditEvent.objects.filter(action__startswith="secret.").order_by("seq")
    assert [e.action for e in events] == [
        "secret.created",
        "secret.rotated",
        "secret.disabled",
        "secret.rotated",
        "secret.created",
        "secret.deleted",
    ]
    for event in events:
        assert event.details["via"] == "api" and "hunter2" not in json.dumps(event.details)


def test_secrets_of_a_sandbox_or_team_you_may_not_see_are_404(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    from teams.models import Team

    box = make_sandbox("hidden")
    other = Team.objects.create(name="Other", slug="other")
    outsider = member(django_user_model, "out", other, "admin")
    token = token_for(outsider, "admin")
    assert client.get(f"/api/v1/sandboxes/{box.pk}/secrets/", **auth(token)).status_code == 404
    assert post_json(client, f"/api/v1/sandboxes/{box.pk}/secrets/", token, {"name": "A", "value": "b"}).status_code == 404
    assert client.get(f"/api/v1/teams/{team.pk}/secrets/", **auth(token)).status_code == 404
    assert not Secret.objects.exists()


ROLES = ("viewer", "operator", "admin")
SCOPE_ROLE = {"read": "viewer", "operate": "operator", "admin": "admin"}
RANK = {"viewer": 1, "operator": 2, "admin": 3}


@pytest.mark.parametrize("scope", ["admin", pytest.param("operate", marks=pytest.mark.slow), pytest.param("read", marks=pytest.mark.slow)])
def test_secret_changes_are_refused_where_the_pages_refuse_them(
    client, django_user_model, team, make_sandbox, fake_engine, clean_workspace, scope
):
    """Per role, each change (set, disable, delete) of a sandbox's and of the team's secrets,
    through the page and then through the API; a narrower scope only refuses more."""
    box = make_sandbox("parity")
    owners = {
        "sandbox": (f"/sandboxes/{box.pk}/secrets/", f"/api/v1/sandboxes/{box.pk}/secrets/", {"sandbox": box}),
        "team": (f"/teams/{team.slug}/secrets/", f"/api/v1/teams/{team.pk}/secrets/", {"team": team}),
    }
    from teams.permissions import SystemActor

    mismatches = []
    for role in ROLES:
        user = member(django_user_model, f"s-{role}", team, role)
        token = token_for(user, scope)
        capped = role if RANK[role] <= RANK[SCOPE_ROLE[scope]] else SCOPE_ROLE[scope]
        for owner, (page_url, api_url, where) in owners.items():
            for op in ("set", "disable", "delete"):
                Secret.objects.all().delete()
                secret = secrets.secret_set(actor=SystemActor("test"), name="KEY", value="v1", **where)
                state = lambda: list(Secret.objects.values_list("name", "enabled", "ciphertext"))  # noqa: E731
                before = state()
                client.force_login(user)
                form = {"op": op, "name": "KEY", "value": "v2", "delivery": "env", "secret": str(secret.pk)}
                page = client.post(page_url, form)
                by_page = state() != before
                client.logout()
                Secret.objects.all().delete()
                secret = secrets.secret_set(actor=SystemActor("test"), name="KEY", value="v1", **where)
                before = state()
                item = f"{api_url}{secret.pk}/"
                if op == "set":
                    api = post_json(client, api_url, token, {"name": "KEY", "value": "v2"})
                elif op == "disable":
                    api = patch(client, item, token, {"enabled": False})
                else:
                    api = client.delete(item, **auth(token))
                by_api = state() != before
                needed = "operator" if owner == "sandbox" else "admin"
                may_page = RANK[role] >= RANK[needed]
                may_api = RANK[capped] >= RANK[needed]
                assert (page.status_code == 403) == (not may_page) and by_page == may_page, (role, owner, op, page.status_code)
                assert by_api == may_api and (api.status_code == 403) == (not may_api), (scope, role, owner, op, api.status_code)
                if scope == "admin" and by_page != by_api:
                    mismatches.append((role, owner, op))
    assert not mismatches


def test_a_proxy_secret_names_its_hosts_and_header_and_bad_ones_are_refused(
    client, django_user_model, team, make_sandbox, fake_engine, clean_workspace
):
    box = make_sandbox("injected")
    root = django_user_model.objects.create_superuser("root", "", "pw-123456789")
    token = token_for(root, "admin")
    url = f"/api/v1/sandboxes/{box.pk}/secrets/"
    body = {"name": "API_KEY", "value": VALUE, "delivery": "proxy", "hosts": "api.example.com", "header": "x-api-key"}
    made = post_json(client, url, token, body)
    assert made.status_code == 201, made.content
    shown = made.json()["secret"]
    assert (shown["delivery"], shown["hosts"], shown["header"]) == ("proxy", "api.example.com", "x-api-key")
    refused = post_json(client, url, token, {**body, "name": "OTHER", "header": "Host"})
    assert refused.status_code == 400 and "header" in refused.json() and VALUE not in refused.content.decode()
    refused = post_json(client, url, token, {**body, "name": "OTHER", "hosts": ""})
    assert refused.status_code == 400 and "hosts" in refused.json()
    assert list(Secret.objects.values_list("name", flat=True)) == ["API_KEY"]
    moved = patch(client, f"{url}{Secret.objects.get().pk}/", token, {"hosts": "*.example.com"})
    assert moved.status_code == 400  # hosts change with a new value only
    rotated = patch(client, f"{url}{Secret.objects.get().pk}/", token, {"value": VALUE + "2", "hosts": "*.example.com"})
    assert rotated.status_code == 200 and rotated.json()["hosts"] == "*.example.com" and rotated.json()["header"] == "x-api-key"
