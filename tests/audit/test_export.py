"""Exporting the audit trail: filtered, streamed, and checkable by `manage.py audit verify --file`
(an edited, removed, added or reordered line is found); a million events in flat memory."""

import json
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit import export
from audit.models import AuditEvent
from audit.selectors import audit_events_visible
from audit.services import audit_record
from teams.models import Membership, Team
from tests.support.audit_events import million_events
from tests.support.paths import ROOT
from tests.support.processes import run_measuring_peak_rss, subprocess_env


@pytest.fixture
def events(db, django_user_model):
    red = Team.objects.create(slug="red", name="Red")
    blue = Team.objects.create(slug="blue", name="Blue")
    alice = django_user_model.objects.create_user("alice", password="pw-alice-123")
    Membership.objects.create(user=alice, team=red, role="viewer")
    for i in range(30):
        team = red if i % 3 else blue
        audit_record(
            actor=None,
            actor_name="bob" if i % 2 else "carol",
            action="backup.done" if i % 5 == 0 else "sandbox.start",
            target=f"box-{i % 4}",
            team_id=team.pk,
            sandbox_uuid=f"00000000-0000-0000-0000-{i:012d}",
            details={"i": i, "ünï": "code"},
        )
    return {"red": red, "blue": blue, "alice": alice}


def export_text(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200 and response.streaming
    return b"".join(response.streaming_content).decode()


def test_a_filtered_export_streams_what_the_user_may_see_and_verifies(client, events):
    client.force_login(events["alice"])
    text = export_text(client, "/audit/export.jsonl?action=sandbox.&actor=bob")
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["type"] == "header" and lines[0]["filters"] == {"actor": "bob", "action": "sandbox."}
    rows = [line for line in lines if line["type"] == "event"]
    expected = AuditEvent.objects.filter(team=events["red"], actor_name="bob", action__startswith="sandbox.").count()
    assert len(rows) == expected > 0
    assert all(r["team_id"] == events["red"].pk for r in rows)  # never another team's
    assert lines[-1] == {"type": "end", "count": expected, "digest": lines[-1]["digest"]}
    assert export.verify_lines(text.splitlines(keepends=True)).ok


def test_a_members_export_verifies_without_showing_how_many_events_the_trail_holds(client, events, tmp_path):
    """Alice sees only Red's events: her file numbers them 1..N and carries neither the trail's
    sequence numbers (their gaps count other teams' events) nor its head."""
    client.force_login(events["alice"])
    text = export_text(client, "/audit/export.jsonl")
    lines = [json.loads(line) for line in text.splitlines()]
    rows = [line for line in lines if line["type"] == "event"]
    mine = audit_events_visible(user=events["alice"])
    assert len(rows) == mine.count() > 0 and all(r["team_id"] in (events["red"].pk, None) for r in rows)
    assert "chain_head" not in lines[0]
    assert [r["n"] for r in rows] == list(range(1, len(rows) + 1))
    assert not any({"seq", "prev_hash", "hash"} & set(r) for r in rows)
    head = AuditEvent.objects.order_by("-seq").first()
    assert head.hash not in text and f'"seq":{head.seq}' not in text
    path = tmp_path / "alice.jsonl"
    path.write_text(text)
    out = StringIO()
    call_command("audit", "verify", "--file", str(path), stdout=out)
    assert f"{len(rows)} events verified" in out.getvalue() and "alice" in out.getvalue()

    csv_head = export_text(client, "/audit/export.csv").splitlines()[0].split(",")
    assert "seq" not in csv_head and "hash" not in csv_head and "n" in csv_head
    page = client.get("/audit/").content.decode()
    seqs = mine.values_list("seq", flat=True)
    assert "<th>#</th>" not in page and not any(f"<tr><td>{seq}</td>" in page for seq in seqs)


def test_tampering_with_a_members_export_is_found_and_placed(client, events, tmp_path):
    client.force_login(events["alice"])
    lines = export_text(client, "/audit/export.jsonl").splitlines(keepends=True)
    edited = list(lines)
    edited[3] = lines[3].replace('"actor_name":"bob"', '"actor_name":"eve"').replace('"actor_name":"carol"', '"actor_name":"eve"')
    renumbered = lines[:3] + [line.replace(f'"n":{i + 4}', f'"n":{i + 3}') for i, line in enumerate(lines[4:-1])] + lines[-1:]
    for name, variant, says in [
        ("edited", edited, r"Event 3 of the export \(line 4\) was altered"),
        ("removed", lines[:3] + lines[4:], "Event 3 of the export is missing: removed between lines 3 and 4"),
        ("renumbered", renumbered, "was altered"),
        ("reordered", lines[:3] + [lines[4], lines[3]] + lines[5:], "out of order"),
        ("last removed", lines[:-2] + lines[-1:], "the last 1 is missing"),
    ]:
        bad = tmp_path / f"{name}.jsonl"
        bad.write_text("".join(variant))
        with pytest.raises(CommandError, match=says):
            call_command("audit", "verify", "--file", str(bad))


def test_an_unfiltered_export_verifies_and_every_kind_of_tampering_is_found(admin_client, events, tmp_path):
    text = export_text(admin_client, "/audit/export.jsonl")
    lines = text.splitlines(keepends=True)
    assert json.loads(lines[0])["chain_head"]["seq"] == AuditEvent.objects.order_by("-seq").first().seq  # an admin sees it all
    assert "<th>#</th>" in admin_client.get("/audit/").content.decode()
    path = tmp_path / "export.jsonl"
    path.write_text(text)
    call_command("audit", "verify", "--file", str(path))

    edited = list(lines)
    row = json.loads(edited[5])
    row["actor_name"] = "mallory"
    edited[5] = json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n"
    shadowed = list(lines)
    shadowed[5] = lines[5].replace('{"action":', '{"action":"auth.login","action":', 1)
    removed = lines[:5] + lines[6:]
    reordered = lines[:5] + [lines[6], lines[5]] + lines[7:]
    added = lines[:-1] + [lines[5]] + lines[-1:]
    cut = lines[:-1]
    for name, variant, says in [
        ("edited", edited, "was altered"),
        ("removed", removed, "Event 5 of the export is missing: removed between lines 5 and 6"),
        ("reordered", reordered, "out of order"),
        ("added", added, "out of order"),
        ("cut", cut, "cut short"),
        ("shadowed", shadowed, "not as the export wrote it"),
    ]:
        bad = tmp_path / f"{name}.jsonl"
        bad.write_text("".join(variant))
        with pytest.raises(CommandError, match=says):
            call_command("audit", "verify", "--file", str(bad))


def test_the_csv_export_holds_the_same_events(admin_client, events):
    import csv
    import io

    text = export_text(admin_client, f"/audit/export.csv?team={events['blue'].pk}")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][0] == "type" and rows[1][0] == "header" and rows[-1][0] == "end"
    body = [r for r in rows if r[0] == "event"]
    assert len(body) == AuditEvent.objects.filter(team=events["blue"]).count()
    assert json.loads(rows[-1][1])["count"] == len(body)


def test_verifying_a_csv_export_says_to_check_the_json_lines_one(admin_client, events, tmp_path):
    path = tmp_path / "audit.csv"
    path.write_text(export_text(admin_client, "/audit/export.csv"))
    with pytest.raises(CommandError, match="a CSV export, which cannot be checked.*JSON Lines"):
        call_command("audit", "verify", "--file", str(path))


def test_verifying_what_is_no_export_stops_at_its_first_line():
    with pytest.raises(CommandError, match="does not start with an export header"):
        call_command("audit", "verify", "--file", "/dev/zero")  # one endless line: read 16 MB of it, no more


def test_bad_filters_are_a_clear_400(admin_client, events):
    response = admin_client.get("/audit/export.jsonl?since=yesterday")
    assert response.status_code == 400 and b"YYYY-MM-DD" in response.content
    assert admin_client.get("/audit/?since=yesterday").status_code == 200


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_million_events_export_in_flat_memory_and_verify(tmp_path):
    million_events(1_000_000)
    out = tmp_path / "all.jsonl"
    export_cmd = [sys.executable, "manage.py", "audit", "export", "--output", str(out)]
    kwargs = {"cwd": ROOT, "env": subprocess_env(), "capture_output": True, "text": True}
    exported, peak_mb = run_measuring_peak_rss(export_cmd, tmp_path / "peak.json", **kwargs)
    assert exported.returncode == 0, exported.stderr[-2000:]
    # What the same command weighs when it exports nothing: Django and the panel's apps loaded.
    idle, idle_mb = run_measuring_peak_rss(
        [*export_cmd[:-1], str(tmp_path / "none.jsonl"), "--actor", "nobody"], tmp_path / "idle.json", **kwargs
    )
    assert idle.returncode == 0, idle.stderr[-2000:]
    print(
        f"export of 1,000,000 events: peak RSS {peak_mb:.0f} MB ({idle_mb:.0f} MB exporting none), file {out.stat().st_size / 1e6:.0f} MB"
    )
    assert peak_mb - idle_mb < 40
    assert peak_mb < 200
    verified = subprocess.run(
        [sys.executable, "manage.py", "audit", "verify", "--file", str(out)], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stderr
    assert "1000000 events verified" in verified.stdout
