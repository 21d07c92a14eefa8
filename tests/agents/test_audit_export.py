"""The agent's events in the audit export: after the audit events, numbered on and sealed, so the
file still verifies and an edited, removed or moved agent event is found; only the sandboxes the
exporter sees, narrowed by the same filters."""

import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents import otlp, services
from audit import export
from audit.services import audit_record
from sandboxes.models import Sandbox
from teams.models import Membership, Team

pytestmark = pytest.mark.django_db
SAMPLE = (Path(__file__).parent / "claude_logs.json").read_bytes()


@pytest.fixture
def two_teams(django_user_model):
    red, blue = Team.objects.create(slug="red", name="Red"), Team.objects.create(slug="blue", name="Blue")
    alice = django_user_model.objects.create_user("alice", password="pw-alice-123")
    Membership.objects.create(user=alice, team=red, role="viewer")
    boxes = {}
    for team in (red, blue):
        box = Sandbox.objects.create(name=f"{team.slug}-box", team=team, image="x", memory_mb=256, cpus=1, pids_limit=64)
        services.record_events([(box.pk, otlp.event_rows(SAMPLE, record_prompts=False))])
        audit_record(actor=None, actor_name="bob", action="sandbox.start", target=box.name, team_id=team.pk, sandbox_uuid=str(box.uuid))
        boxes[team.slug] = box
    return {"alice": alice, **boxes}


def export_text(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200
    return b"".join(response.streaming_content).decode()


def test_a_members_export_holds_the_agent_events_of_their_sandboxes_and_verifies(client, two_teams, tmp_path):
    client.force_login(two_teams["alice"])
    text = export_text(client, "/audit/export.jsonl")
    lines = [json.loads(line) for line in text.splitlines()]
    agent = [line for line in lines if line["type"] == "agent_event"]
    assert len(agent) == 20 and {a["sandbox"] for a in agent} == {"red-box"}
    assert [line["n"] for line in lines if "n" in line] == list(range(1, len(lines) - 1))  # numbered on from the audit events
    bash = next(a for a in agent if a["kind"] == "tool_result" and a["tool"] == "Bash")
    assert bash["summary"] == "echo hello-from-bash > /workspace/Projects/out.txt"
    assert lines[-1]["count"] == len(lines) - 2
    assert export.verify_lines(text.splitlines(keepends=True)).ok

    raw = text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(raw) if '"tool":"Bash"' in line and "tool_result" in line)
    edited = list(raw)
    edited[at] = raw[at].replace("echo hello-from-bash", "echo nothing-to-see")
    for name, variant, says in [
        ("edited", edited, "was altered"),
        ("removed", raw[:at] + raw[at + 1 :], "missing"),
        ("moved", raw[:1] + [raw[at]] + raw[1:at] + raw[at + 1 :], "out of order"),
    ]:
        bad = tmp_path / f"{name}.jsonl"
        bad.write_text("".join(variant))
        with pytest.raises(CommandError, match=says):
            call_command("audit", "verify", "--file", str(bad))


def test_the_filters_narrow_the_agent_events_too(admin_client, two_teams):
    def agent_lines(query: str) -> list[dict]:
        text = export_text(admin_client, f"/audit/export.jsonl?{query}")
        return [json.loads(line) for line in text.splitlines() if '"agent_event"' in line]

    assert len(agent_lines("")) == 40
    assert {a["sandbox"] for a in agent_lines("sandbox=blue-box")} == {"blue-box"}
    assert {a["kind"] for a in agent_lines("action=agent.api")} == {"api_request"}  # the sample has no api_error
    assert agent_lines("action=sandbox.") == [] and agent_lines("actor=bob") == []
    csv_text = export_text(admin_client, "/audit/export.csv?sandbox=red-box")
    assert csv_text.count("\nagent_event,") == 20
