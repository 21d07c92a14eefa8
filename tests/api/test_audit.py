"""The audit trail through the API: the audit page's list and filters (only what the user may
see), its exports streamed, and an uploaded export checked a line at a time."""

import json

import pytest

from audit.models import AuditEvent
from audit.services import audit_record
from teams.models import Membership, Team

from .helpers import auth, token_for

pytestmark = pytest.mark.django_db
NDJSON = "application/x-ndjson"


@pytest.fixture
def events(db, django_user_model):
    red = Team.objects.create(slug="red", name="Red")
    blue = Team.objects.create(slug="blue", name="Blue")
    alice = django_user_model.objects.create_user("alice", password="pw-alice-123")
    Membership.objects.create(user=alice, team=red, role="viewer")
    for i in range(200):
        team = red if i % 3 else blue
        audit_record(
            actor=None,
            actor_name="bob" if i % 2 else "carol",
            action="backup.done" if i % 5 == 0 else "sandbox.start",
            target=f"box-{i % 4}",
            team_id=team.pk,
            sandbox_uuid=f"00000000-0000-0000-0000-{i:012d}",
            details={"i": i},
        )
    return {"red": red, "blue": blue, "alice": alice, "alice_token": token_for(alice, "read")}


def _streamed(response) -> str:
    assert response.status_code == 200 and response.streaming
    return b"".join(response.streaming_content).decode()


def _verify(client, token: str, text: str, content_type: str = NDJSON):
    return client.generic("POST", "/api/v1/audit/verify/", text.encode(), content_type=content_type, **auth(token))


def test_the_list_shows_what_the_page_shows_a_page_at_a_time(client, events):
    token = events["alice_token"]
    first = client.get("/api/v1/audit/events/", **auth(token)).json()
    red = AuditEvent.objects.filter(team=events["red"], sandbox_uuid__isnull=False)
    assert first["count"] == red.count() > 80 and len(first["results"]) == min(100, red.count())
    assert all(e["team_id"] == events["red"].pk for e in first["results"])
    assert "seq" not in first["results"][0]  # a member's gaps would count the other teams' events
    assert first["next"].endswith("page=2") and first["previous"] is None
    filtered = client.get("/api/v1/audit/events/?actor=bob&action=backup.", **auth(token)).json()
    expected = red.filter(actor_name="bob", action__startswith="backup.").count()
    assert filtered["count"] == expected > 0 and {e["action"] for e in filtered["results"]} == {"backup.done"}
    bad = client.get("/api/v1/audit/events/?since=yesterday", **auth(token))
    assert bad.status_code == 400 and "Since" in json.dumps(bad.json())
    assert client.get("/api/v1/audit/events/?colour=red", **auth(token)).status_code == 400


def test_a_superuser_sees_every_event_with_its_place_in_the_trail(client, events, django_user_model):
    root = django_user_model.objects.create_superuser("root", "", "pw-123456789")
    body = client.get(f"/api/v1/audit/events/?team={events['blue'].pk}", **auth(token_for(root, "read"))).json()
    assert body["count"] == AuditEvent.objects.filter(team=events["blue"]).count()
    seqs = [e["seq"] for e in body["results"]]
    assert seqs == sorted(seqs, reverse=True)


def test_exports_stream_and_the_jsonl_one_verifies_and_tampering_is_found(client, events):
    token = events["alice_token"]
    text = _streamed(client.get("/api/v1/audit/export.jsonl?actor=bob", **auth(token), HTTP_ACCEPT=NDJSON))
    lines = text.splitlines(keepends=True)
    header = json.loads(lines[0])
    assert header["filters"] == {"actor": "bob"} and "alice may see" in header["scope"] and "chain_head" not in header
    count = AuditEvent.objects.filter(team=events["red"], actor_name="bob").count()
    assert json.loads(lines[-1])["count"] == count
    csv = client.get("/api/v1/audit/export.csv?actor=bob", **auth(token))
    assert csv["Content-Type"].startswith("text/csv") and _streamed(csv).count("\nevent,") == count

    ok = _verify(client, token, text)  # a read token may check a file: nothing changes
    assert ok.status_code == 200
    assert ok.json() == {
        "ok": True,
        "events": count,
        "problem": None,
        "scope": header["scope"],
        "filters": {"actor": "bob"},
        "chain_head_current": None,
    }
    edited = lines[:3] + [lines[3].replace('"i":', '"i":1')] + lines[4:]
    removed = lines[:3] + lines[4:]
    for tampered, problem in ((edited, "Event 3 of the export (line 4) was altered"), (removed, "Event 3 of the export is missing")):
        answer = _verify(client, token, "".join(tampered)).json()
        assert answer["ok"] is False and problem in answer["problem"], answer
    assert _verify(client, token, "\xff\xfe not an export").json()["ok"] is False
    empty = client.generic("POST", "/api/v1/audit/verify/", b"", CONTENT_TYPE=NDJSON, **auth(token))
    assert empty.json()["problem"] == "The file is empty."


def test_a_superusers_export_names_the_chain_head_and_the_check_knows_it(client, events, django_user_model):
    root = django_user_model.objects.create_superuser("root", "", "pw-123456789")
    token = token_for(root, "read")
    text = _streamed(client.get("/api/v1/audit/export.jsonl", **auth(token)))
    answer = _verify(client, token, text).json()
    assert answer["ok"] and answer["chain_head_current"] is True and answer["events"] == AuditEvent.objects.count()


def test_a_check_takes_only_json_lines_of_a_bounded_size(client, events, settings):
    token = events["alice_token"]
    text = _streamed(client.get("/api/v1/audit/export.jsonl", **auth(token)))
    assert _verify(client, token, text, content_type="text/csv").status_code == 415
    settings.API_AUDIT_VERIFY_MAX_BYTES = 1000
    too_big = _verify(client, token, text)
    assert too_big.status_code == 413 and "1000" in too_big.json()["detail"]
    assert client.get("/api/v1/audit/events/").status_code == 401


@pytest.mark.parametrize("who", ["member", "superuser"])
def test_the_api_lists_the_very_events_the_page_lists(client, events, django_user_model, who):
    user = events["alice"] if who == "member" else django_user_model.objects.create_superuser("root", "", "pw-123456789")
    token = token_for(user, "read")
    client.force_login(user)  # once, and the token's first use, before any comparison: both are events
    client.get("/api/v1/audit/events/", **auth(token))
    for query in ("", "?action=backup.", "?actor=bob&page=2", f"?team={events['red'].pk}&since=2000-01-01"):
        api = client.get(f"/api/v1/audit/events/{query}", **auth(token)).json()
        page = client.get(f"/audit/{query}").context["page"]
        assert api["count"] == page.paginator.count
        shown = [(e.action, e.target, e.details) for e in page.object_list]
        assert [(e["action"], e["target"], e["details"]) for e in api["results"]] == shown, query
        assert all(("seq" in e) == (who == "superuser") for e in api["results"])
