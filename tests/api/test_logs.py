"""GET /api/v1/sandboxes/<id>/logs/: the page's log view as text (the fake engine's log here;
the real engine's, followed, in tests/client/test_lifecycle.py)."""

import pytest

from api import views_logs
from sandboxes.live.logs import MAX_LINE
from teams.models import Team

from .helpers import auth, member, token_for

pytestmark = pytest.mark.django_db


def body(response) -> str:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    return b"".join(response.streaming_content).decode()


@pytest.fixture
def logged(make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("talker")
    fake_engine.containers[sandbox.container_id].log = [f"line {i}\n" for i in range(300)]
    return sandbox


def test_a_viewer_reads_the_last_lines(client, django_user_model, team, logged):
    token = token_for(member(django_user_model, "dev", team, "viewer"), "read")
    url = f"/api/v1/sandboxes/{logged.pk}/logs/"
    assert body(client.get(url, **auth(token))).splitlines() == [f"line {i}" for i in range(100, 300)]  # 200, as the page
    assert body(client.get(url + "?tail=2", **auth(token))) == "line 298\nline 299\n"
    assert body(client.get(url + "?tail=0", **auth(token))) == ""


def test_stamps_and_since_resume_after_the_last_line_read(client, django_user_model, team, logged):
    token = token_for(member(django_user_model, "dev", team, "viewer"), "read")
    url = f"/api/v1/sandboxes/{logged.pk}/logs/"
    last_two = body(client.get(url + "?tail=2&timestamps=1", **auth(token))).splitlines()
    assert last_two == ["2026-01-01T00:04:58.000000000Z stdout line 298", "2026-01-01T00:04:59.000000000Z stdout line 299"]
    after = body(client.get(url + "?since=2026-01-01T00:04:57.000000000Z", **auth(token)))
    assert after == "line 298\nline 299\n"  # the line of that very stamp is not sent again


def test_a_long_line_is_cut_as_on_the_page(client, django_user_model, team, logged, fake_engine):
    fake_engine.containers[logged.container_id].log = ["x" * (MAX_LINE * 5) + "\n", "short\n"]
    token = token_for(member(django_user_model, "dev", team, "viewer"), "read")
    first, second = body(client.get(f"/api/v1/sandboxes/{logged.pk}/logs/", **auth(token))).splitlines()
    assert first.startswith("x" * MAX_LINE + " … (the line goes on") and len(first) < MAX_LINE + 100
    assert second == "short"


def test_refusals(client, django_user_model, team, logged, make_sandbox):
    other = Team.objects.create(name="Other", slug="other")
    outsider = token_for(member(django_user_model, "outsider", other, "admin"), "admin")
    url = f"/api/v1/sandboxes/{logged.pk}/logs/"
    assert client.get(url).status_code == 401
    assert client.get(url, **auth(outsider)).status_code == 404  # as for no such sandbox
    assert client.get("/api/v1/sandboxes/999999/logs/", **auth(outsider)).status_code == 404
    reader = token_for(member(django_user_model, "dev", team, "viewer"), "read")
    for query in ("tail=-1", "tail=5001", "tail=x", "follow=maybe", "since=yesterday", "colour=red", "since=x2026-01-01T00:00:00Z"):
        answer = client.get(f"{url}?{query}", **auth(reader))
        assert answer.status_code == 400, query
    logged.container_id = ""
    logged.save(update_fields=["container_id"])
    answer = client.get(url, **auth(reader))
    assert answer.status_code == 409 and "no container yet" in answer.json()["detail"]


def test_a_follow_stops_being_sent_once_the_token_is_revoked(client, django_user_model, team, logged, monkeypatch):
    """Checked while lines come (every RECHECK_SECONDS; every line here)."""
    monkeypatch.setattr(views_logs, "RECHECK_SECONDS", -1)
    user = member(django_user_model, "dev", team, "viewer")
    token = token_for(user, "read")
    response = client.get(f"/api/v1/sandboxes/{logged.pk}/logs/?follow=1", **auth(token))
    lines = iter(response.streaming_content)
    assert next(lines) == b"line 100\n"
    user.api_tokens.update(revoked_at="2026-01-01T00:00:00Z")
    assert list(lines) == []


def test_a_user_cannot_hold_every_page_process_with_followed_logs(client, django_user_model, team, logged, settings):
    """A follow holds a gunicorn sync worker for minutes: a viewer opening one follow per
    worker would take the panel's pages down. Past the per-user cap: 429, and a follow that
    ends gives its slot back."""
    settings.API_LOG_FOLLOWS_PER_USER, settings.API_LOG_FOLLOWS_TOTAL = 2, 3
    viewer = token_for(member(django_user_model, "dev", team, "viewer"), "read")
    url = f"/api/v1/sandboxes/{logged.pk}/logs/?follow=1"
    held = [client.get(url, **auth(viewer)) for _ in range(2)]
    assert [r.status_code for r in held] == [200, 200]
    third = client.get(url, **auth(viewer))
    assert third.status_code == 429 and "already follow 2 logs" in third.json()["detail"]
    plain = client.get(url.replace("follow=1", "tail=1"), **auth(viewer))
    assert plain.status_code == 200  # reading without follow is not capped...
    assert "X-Accel-Buffering" not in plain  # ...and a proxy may buffer it, freeing the worker whatever the client's pace
    assert held[1]["X-Accel-Buffering"] == "no"
    # Another user gets the panel's last shared slot, then the panel is full for everyone.
    other = token_for(member(django_user_model, "dev2", team, "viewer"), "read")
    kept = client.get(url, **auth(other))
    assert kept.status_code == 200
    full = client.get(url, **auth(other))
    assert full.status_code == 429 and "already serves 3 followed logs" in full.json()["detail"]
    assert b"".join(held[0].streaming_content)  # read to its end: its slot is free again
    assert client.get(url, **auth(viewer)).status_code == 200
