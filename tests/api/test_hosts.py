"""Hosts through the API: superusers only (anyone else gets 404, as on the Hosts page), with the
page's health and load, each change through hosts.services and audited via the API; a token's
scope narrows a superuser too."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from hosts.models import Host, JoinToken

from .helpers import auth, member, post_json, token_for

pytestmark = pytest.mark.django_db


def patch(client, url, token, body):
    return client.patch(url, body, content_type="application/json", **auth(token))


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "", "pw-123456789")


def test_hosts_are_404_to_anyone_but_a_superuser_as_on_the_page(client, django_user_model, team):
    admin = member(django_user_model, "ada", team, "admin")
    token = token_for(admin, "admin")
    local = Host.objects.get(name="local")
    client.force_login(admin)
    assert client.get("/hosts/").status_code == 404
    client.logout()
    calls = [
        client.get("/api/v1/hosts/", **auth(token)),
        client.get(f"/api/v1/hosts/{local.pk}/", **auth(token)),
        post_json(client, "/api/v1/hosts/", token, {"name": "new-one"}),
        patch(client, f"/api/v1/hosts/{local.pk}/", token, {"enabled": False}),
        client.delete(f"/api/v1/hosts/{local.pk}/", **auth(token)),
        client.get("/api/v1/hosts/join-tokens/", **auth(token)),
        post_json(client, "/api/v1/hosts/join-tokens/", token, {"name": "far"}),
    ]
    assert [c.status_code for c in calls] == [404] * len(calls)
    assert list(Host.objects.values_list("name", "enabled")) == [("local", True)]


def test_a_superuser_lists_adds_drains_disables_and_deletes_hosts(client, root):
    token = token_for(root, "admin")
    Host.objects.filter(name="local").update(last_heartbeat=timezone.now(), engine_version="27.0")
    listed = client.get("/api/v1/hosts/", **auth(token)).json()
    assert [(h["name"], h["health"], h["engine_version"]) for h in listed] == [("local", "reachable", "27.0")]
    assert listed[0]["load"]["sandboxes"] == 0 and listed[0]["deletable"] is True
    made = post_json(
        client, "/api/v1/hosts/", token, {"name": "gpu-1", "docker_url": "tcp://198.18.0.7:2376", "cpus": "8", "labels": ["gpu"]}
    )
    assert made.status_code == 201, made.content
    host = Host.objects.get(name="gpu-1")
    assert made.json()["health"] == "never_seen" and host.labels == ["gpu"] and host.docker_url == "tcp://198.18.0.7:2376"
    drained = patch(client, f"/api/v1/hosts/{host.pk}/", token, {"draining": True, "enabled": False})
    assert drained.status_code == 200 and drained.json()["draining"] is True
    host.refresh_from_db()
    assert host.draining and not host.enabled
    assert client.delete(f"/api/v1/hosts/{host.pk}/", **auth(token)).status_code == 204
    assert not Host.objects.filter(name="gpu-1").exists()
    actions = list(AuditEvent.objects.filter(action__startswith="host.").order_by("seq").values_list("action", flat=True))
    assert actions == ["host.create", "host.update", "host.delete"]
    assert all(e.details["via"] == "api" for e in AuditEvent.objects.filter(action__startswith="host."))


def test_bad_input_and_a_host_in_use_change_nothing(client, root, team):
    from tests.api.test_sandboxes import row

    token = token_for(root, "admin")
    bad = post_json(client, "/api/v1/hosts/", token, {"name": "Bad Name", "docker_url": "http://x", "labels": ["UPPER"]})
    assert bad.status_code == 400 and {"name", "docker_url", "labels"} <= set(bad.json())
    assert post_json(client, "/api/v1/hosts/", token, {"name": "local"}).status_code == 400
    assert patch(client, "/api/v1/hosts/999999/", token, {"enabled": False}).status_code == 404
    assert patch(client, f"/api/v1/hosts/{Host.objects.get(name='local').pk}/", token, {}).status_code == 400
    row(team, "here")
    busy = client.delete(f"/api/v1/hosts/{Host.objects.get(name='local').pk}/", **auth(token))
    assert busy.status_code == 409 and "holds 1 sandbox" in busy.json()["detail"]
    assert list(Host.objects.values_list("name", flat=True)) == ["local"]
    assert not AuditEvent.objects.filter(action__startswith="host.").exists()


@pytest.mark.parametrize("scope", ["operate", "read"])
def test_a_narrower_scope_keeps_a_superuser_from_changing_hosts(client, root, scope):
    token = token_for(root, scope)
    local = Host.objects.get(name="local")
    assert client.get("/api/v1/hosts/", **auth(token)).status_code == 200
    refused = [
        post_json(client, "/api/v1/hosts/", token, {"name": "new-one"}),
        patch(client, f"/api/v1/hosts/{local.pk}/", token, {"enabled": False}),
        client.delete(f"/api/v1/hosts/{local.pk}/", **auth(token)),
        post_json(client, "/api/v1/hosts/join-tokens/", token, {"name": "far"}),
    ]
    assert [r.status_code for r in refused] == [403] * 4
    assert list(Host.objects.values_list("name", "enabled")) == [("local", True)] and not JoinToken.objects.exists()


def test_join_tokens_are_listed_without_their_secret_and_revoked(client, root):
    token = token_for(root, "admin")
    waiting = JoinToken.objects.create(
        name="far-1", secret_sha256="a" * 64, created_by_name="root", expires_at=timezone.now() + timedelta(hours=1)
    )
    listed = client.get("/api/v1/hosts/join-tokens/", **auth(token))
    assert [(t["name"], t["state"]) for t in listed.json()] == [("far-1", "waiting")] and b"a" * 64 not in listed.content
    revoked = post_json(client, f"/api/v1/hosts/join-tokens/{waiting.pk}/revoke/", token)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert JoinToken.objects.get(pk=waiting.pk).revoked_at is not None
    assert AuditEvent.objects.get(action="host.token_revoked").details["via"] == "api"
    made = post_json(client, "/api/v1/hosts/join-tokens/", token, {"name": "far-2"})
    if connection.vendor == "sqlite":  # as the page: no host on another machine shares a SQLite file
        assert made.status_code == 400 and not JoinToken.objects.filter(name="far-2").exists()
    else:
        assert made.status_code in (201, 400)
        assert (made.status_code == 201) == JoinToken.objects.filter(name="far-2").exists()
        if made.status_code == 201:
            assert made["Cache-Control"] == "no-store" and made.json()["join_token"]
