"""The sandbox page's read-only cards through the API: the files changed lately (and the
container's own changes) and the disk use against the quota."""

import os
import time

import pytest

from teams.models import Team

from .helpers import auth, member, token_for

pytestmark = pytest.mark.django_db


def test_the_files_changed_lately_are_listed_newest_first(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    box = make_sandbox("busy")
    old = box.workspace_path / "Projects" / "old.txt"
    old.write_text("old")
    two_days = time.time() - 2 * 86400
    os.utime(old, (two_days, two_days))
    (box.workspace_path / "Projects" / "new.txt").write_text("new!")
    token = token_for(member(django_user_model, "vic", team, "viewer"), "read")
    url = f"/api/v1/sandboxes/{box.pk}/activity/"
    shown = client.get(url, **auth(token))
    assert shown.status_code == 200, shown.content
    body = shown.json()
    assert body["within"] == "1h" and [(e["folder"], e["path"], e["size"]) for e in body["entries"]] == [("Projects", "new.txt", 4)]
    assert body["diff_error"] == "" and isinstance(body["diff"], list)
    week = client.get(url + "?within=7d", **auth(token)).json()
    assert [e["path"] for e in week["entries"]] == ["new.txt", "old.txt"]
    assert client.get(url + "?within=1y", **auth(token)).status_code == 400
    outsider = token_for(member(django_user_model, "out", Team.objects.create(name="Other", slug="other"), "admin"))
    assert client.get(url, **auth(outsider)).status_code == 404


def test_the_disk_use_of_a_sandbox_outside_the_pool_is_unknown(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    box = make_sandbox("plain")
    token = token_for(member(django_user_model, "vic", team, "viewer"), "read")
    shown = client.get(f"/api/v1/sandboxes/{box.pk}/storage/", **auth(token))
    assert shown.status_code == 200 and shown.json() == {"in_pool": False, "used_bytes": None, "limit_bytes": None, "percent": None}
    assert client.get("/api/v1/sandboxes/999999/storage/", **auth(token)).status_code == 404
