"""A sandbox's settings through the API, each through the service its page's form calls: the
same effect, the same refusals per role, audited via the API; the SSH key's private half never
in an answer."""

import pytest

from audit.models import AuditEvent
from sandboxes.models import Identity, Sandbox

from .helpers import auth, member, post_json, token_for

pytestmark = pytest.mark.django_db


def put(client, url, token, body):
    return client.put(url, body, content_type="application/json", **auth(token))


def test_git_identity_and_ssh_key_are_set_and_read_back(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    box = make_sandbox("ident")
    token = token_for(member(django_user_model, "op", team, "operator"), "operate")
    url = f"/api/v1/sandboxes/{box.pk}/settings/"
    assert client.get(url, **auth(token)).json()["git_name"] == ""
    saved = put(client, f"{url}git-identity/", token, {"git_name": "Agent Smith", "git_email": "agent@example.com"})
    assert saved.status_code == 200 and saved.json()["git_email"] == "agent@example.com"
    assert Identity.objects.get(sandbox=box).git_name == "Agent Smith"
    bad = put(client, f"{url}git-identity/", token, {"git_name": 'Bad "quote"', "git_email": "nope"})
    assert bad.status_code == 400 and {"git_name", "git_email"} <= set(bad.json())
    assert Identity.objects.get(sandbox=box).git_name == "Agent Smith"
    key = post_json(client, f"{url}ssh-key/", token)
    identity = Identity.objects.get(sandbox=box)
    assert key.status_code == 200 and key.json()["ssh_public"] == identity.ssh_public.strip() != ""
    assert key.json()["ssh_public"].startswith("ssh-ed25519 ") and b"PRIVATE" not in key.content
    assert b"PRIVATE" not in client.get(url, **auth(token)).content
    events = AuditEvent.objects.filter(action__in=["sandbox.git_identity", "sandbox.ssh_key"]).order_by("seq")
    assert [e.action for e in events] == ["sandbox.git_identity", "sandbox.ssh_key"]
    assert all(e.details["via"] == "api" for e in events)


def test_allowlist_and_network_mode(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    box = make_sandbox("netbox")
    token = token_for(member(django_user_model, "op", team, "operator"), "operate")
    admin = token_for(member(django_user_model, "adm", team, "admin"), "admin")
    url = f"/api/v1/sandboxes/{box.pk}/settings/"
    body = {"egress_presets": ["claude-code"], "egress_allow": "example.com\n"}
    widen = put(client, f"{url}allowlist/", token, body)  # adding entries widens: the team's admins only
    assert widen.status_code == 403 and "Only the team's admins may widen" in widen.json()["detail"]
    assert Sandbox.objects.get(pk=box.pk).egress_allow == ""
    saved = put(client, f"{url}allowlist/", admin, body)
    assert saved.status_code == 200, saved.content
    box.refresh_from_db()
    assert box.egress_presets == ["claude-code"] and box.egress_allow == "example.com"
    assert put(client, f"{url}allowlist/", token, {"egress_presets": ["nope"]}).status_code == 400
    assert put(client, f"{url}allowlist/", token, {"egress_allow": "not a host!!"}).status_code == 400
    assert Sandbox.objects.get(pk=box.pk).egress_allow == "example.com"
    moved = put(client, f"{url}network/", token, {"network_mode": "none"})
    assert moved.status_code in (200, 409, 503), moved.content  # as the engine and egress rules allow here
    assert (moved.status_code == 200) == (Sandbox.objects.get(pk=box.pk).network_mode == "none")
    assert put(client, f"{url}network/", token, {"network_mode": "bridge-ish"}).status_code == 400
    held = Sandbox.objects.filter(pk=box.pk).update(on_hold=True)
    assert held and put(client, f"{url}allowlist/", admin, {"egress_allow": "b.example"}).status_code == 409
    assert "incident" in put(client, f"{url}allowlist/", admin, {"egress_allow": "b.example"}).json()["detail"]
    assert AuditEvent.objects.get(action="sandbox.allowlist_changed").details["via"] == "api"


def test_a_disk_quota_outside_the_pool_is_refused_with_the_pages_message(
    client, django_user_model, team, make_sandbox, fake_engine, clean_workspace
):
    box = make_sandbox("plain")  # the fast tier has no storage pool: plain folders, no quota
    token = token_for(member(django_user_model, "op", team, "operator"), "operate")
    refused = put(client, f"/api/v1/sandboxes/{box.pk}/settings/disk/", token, {"disk_mb": 512})
    assert refused.status_code == 409 and "storage pool" in refused.json()["detail"]
    assert put(client, f"/api/v1/sandboxes/{box.pk}/settings/disk/", token, {"disk_mb": "lots"}).status_code == 400
    assert Sandbox.objects.get(pk=box.pk).disk_mb == box.disk_mb


ROLES = ("viewer", "operator", "admin")
RANK = {"viewer": 1, "operator": 2, "admin": 3}
SCOPE_ROLE = {"read": "viewer", "operate": "operator", "admin": "admin"}


def _state(box: Sandbox) -> tuple:
    row = Sandbox.objects.get(pk=box.pk)
    identity = Identity.objects.filter(sandbox=box).values_list("git_name", "ssh_public").first()
    return row.egress_presets, row.egress_allow, row.network_mode, row.disk_mb, identity


@pytest.mark.parametrize("scope", ["admin", pytest.param("operate", marks=pytest.mark.slow), pytest.param("read", marks=pytest.mark.slow)])
def test_settings_changes_are_refused_where_the_page_refuses_them(
    client, django_user_model, team, make_sandbox, fake_engine, clean_workspace, scope
):
    box = make_sandbox("parity", egress_allow="a.example\nb.example")  # narrowed below: operators may
    changes = {
        # name: (page URL, page form, API path, API method, API body)
        "allowlist": (f"/sandboxes/{box.pk}/allowlist/", {"egress_allow": "a.example"}, "allowlist/", "put", {"egress_allow": "a.example"}),
        "git": (
            f"/sandboxes/{box.pk}/secrets/",
            {"op": "git", "git_name": "N", "git_email": "n@example.com"},
            "git-identity/",
            "put",
            {"git_name": "N", "git_email": "n@example.com"},
        ),
        "ssh": (f"/sandboxes/{box.pk}/secrets/", {"op": "ssh"}, "ssh-key/", "post", {}),
        "disk": (f"/sandboxes/{box.pk}/storage/quota/", {"disk_mb": "512"}, "disk/", "put", {"disk_mb": 512}),
        "network": (f"/sandboxes/{box.pk}/network/", {"network_mode": "none"}, "network/", "put", {"network_mode": "none"}),
    }
    original = Sandbox.objects.filter(pk=box.pk).values("egress_presets", "egress_allow", "network_mode", "disk_mb").get()

    def reset() -> None:
        Sandbox.objects.filter(pk=box.pk).update(**original)
        Identity.objects.filter(sandbox=box).delete()

    table = []
    for role in ROLES:
        user = member(django_user_model, f"g-{role}", team, role)
        token = token_for(user, scope)
        capped = role if RANK[role] <= RANK[SCOPE_ROLE[scope]] else SCOPE_ROLE[scope]
        for name, (page_url, form, api_path, method, body) in changes.items():
            reset()
            before = _state(box)
            client.force_login(user)
            page = client.post(page_url, form)
            by_page = _state(box) != before
            client.logout()
            reset()
            url = f"/api/v1/sandboxes/{box.pk}/settings/{api_path}"
            api = getattr(client, method)(url, body, content_type="application/json", **auth(token))
            by_api = _state(box) != before
            may = RANK[role] >= RANK["operator"]
            assert (page.status_code == 403) == (not may), (role, name, page.status_code)
            assert (api.status_code == 403) == (RANK[capped] < RANK["operator"]), (scope, role, name, api.status_code)
            if scope == "admin":
                assert by_page == by_api, (role, name, page.status_code, api.status_code, api.content)
            else:
                assert not by_api or by_page
            table.append((role, name, by_page, by_api))
    reset()
    assert any(t[2] for t in table) and not all(t[2] for t in table)
