"""Reading Claude Code's OTLP/JSON export into rows: the kinds, the tokens and cost, the command
or file of a tool call, prompts only where the team records them, and every bound."""

import json
from decimal import Decimal
from pathlib import Path

import pytest

from agents import otlp

HERE = Path(__file__).parent
LOGS = (HERE / "spec_logs.json").read_bytes()


def test_the_events_of_a_logs_request_become_rows_with_their_kind_tokens_cost_and_command():
    rows = otlp.event_rows(LOGS, record_prompts=False)
    assert [r["kind"] for r in rows] == ["user_prompt", "api_request", "tool_decision", "tool_result", "tool_result", "api_error"]
    prompt, api, decision, bash, edit, error = rows
    assert prompt["summary"] == "" and prompt["prompt_length"] == 23 and "prompt" not in prompt["attributes"]
    assert (api["model"], api["input_tokens"], api["output_tokens"], api["cache_read_tokens"], api["cache_creation_tokens"]) == (
        "claude-sonnet-4-5",
        1000,
        200,
        50,
        10,
    )
    assert api["cost_usd"] == Decimal("0.012345") and api["session_id"] == "sess-1"
    assert (decision["tool"], decision["decision"]) == ("Bash", "accept")
    assert (bash["tool"], bash["success"], bash["summary"]) == ("Bash", True, "ls -la /workspace")
    assert (edit["tool"], edit["success"], edit["summary"]) == ("Edit", False, "/workspace/src/app.py")
    assert error["summary"] == "overloaded"
    assert api["attributes"]["service.name"] == "claude-code" and api["attributes"]["duration_ms"] == 1200


def test_a_prompt_is_kept_only_where_the_team_records_prompts():
    prompt = otlp.event_rows(LOGS, record_prompts=True)[0]
    assert prompt["summary"] == "list the files, please"


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not an OTLP JSON object"),
        (b'{"resourceLogs": {"a": 1}}', "not a list"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [1]}]}]}', "not an object"),
    ],
)
def test_garbage_is_refused_with_a_reason(body, message):
    with pytest.raises(otlp.OTLPError, match=message):
        otlp.event_rows(body, record_prompts=False)


def test_too_many_records_attributes_or_characters_are_bounded(settings):
    settings.AGENT_OTLP_MAX_RECORDS = 3
    with pytest.raises(otlp.OTLPError, match="more than 3 records"):
        otlp.event_rows(LOGS, record_prompts=False)
    settings.AGENT_OTLP_MAX_RECORDS = 1000
    settings.AGENT_OTLP_MAX_ATTRIBUTES = 5
    settings.AGENT_OTLP_MAX_VALUE = 20
    many = [{"key": f"k{i}", "value": {"stringValue": "x" * 5000}} for i in range(100)]
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "claude_code.custom"}, "attributes": many}]}]}]}
    (row,) = otlp.event_rows(json.dumps(body).encode(), record_prompts=False)
    assert row["kind"] == "other" and row["name"] == "custom"
    assert len(row["attributes"]) == 5 and all(len(v) == 20 for v in row["attributes"].values())


def test_metrics_are_counted_not_stored():
    assert otlp.metric_points(otlp.loads((HERE / "spec_metrics.json").read_bytes())) == 1


# Real requests of Claude Code 2.1.337 (captured from the CLI in the sandbox image; see README).
def _real(name: str, *, record_prompts: bool = False) -> list[dict]:
    return otlp.event_rows((HERE / name).read_bytes(), record_prompts=record_prompts)


def test_a_real_session_gives_the_commands_the_files_the_tokens_and_the_cost():
    rows = _real("claude_logs.json")
    results = [(r["tool"], r["success"], r["summary"]) for r in rows if r["kind"] == "tool_result"]
    assert results == [
        ("Bash", True, "echo hello-from-bash > /workspace/Projects/out.txt"),
        ("Read", True, "/workspace/Projects/out.txt"),
        ("Edit", True, "/workspace/Projects/out.txt"),
        ("Write", True, "/workspace/Projects/notes.md"),
    ]
    api = [r for r in rows if r["kind"] == "api_request"]
    assert len(api) == 5 and api[0]["input_tokens"] == 4552 and api[0]["cost_usd"] == Decimal("0.019148")
    assert all(r["model"] and r["session_id"] for r in api)
    assert [r["decision"] for r in rows if r["kind"] == "tool_decision"] == ["accept"] * 4
    # No file's content is kept (a Write's whole input), and no prompt or answer unless recorded.
    assert not any("tool_input" in r["attributes"] or "content" in r["summary"] for r in rows)
    texts = [r["summary"] for r in rows if r["kind"] == "user_prompt" or r["name"] == "assistant_response"]
    assert texts == ["", ""] and not any({"prompt", "prompt_text", "response"} & set(r["attributes"]) for r in rows)
    (prompt,) = [r for r in rows if r["kind"] == "user_prompt"]
    assert prompt["prompt_length"] == len("Run the scripted task")


def test_a_real_prompt_is_kept_where_the_team_records_prompts():
    (prompt,) = [r for r in _real("claude_logs.json", record_prompts=True) if r["kind"] == "user_prompt"]
    assert prompt["summary"] == "Run the scripted task"


def test_a_real_refusal_by_managed_settings_is_a_rejected_decision_with_its_command():
    (refused,) = [r for r in _real("claude_logs_denied.json") if r["decision"] == "reject"]
    assert refused["kind"] == "tool_decision" and refused["tool"] == "Bash" and refused["summary"].startswith("rm ")


def test_real_metrics_are_read():
    assert otlp.metric_points(otlp.loads((HERE / "claude_metrics.json").read_bytes())) > 5


def test_the_receiver_blanks_the_values_of_env_and_file_secrets_only(db, team, make_sandbox, fake_engine, clean_workspace):
    from agents.services import secret_values
    from sandboxes.secrets import credentials
    from teams.permissions import SystemActor

    box = make_sandbox("secrets-blanked")
    actor = SystemActor("test")
    credentials.secret_set(actor=actor, team=team, name="TEAM_TOKEN", value="team-token-value")
    credentials.secret_set(actor=actor, sandbox=box, name="OWN_FILE", value="own-file-value", delivery="file")
    credentials.secret_set(actor=actor, sandbox=box, name="SHORT", value="1")
    proxied = {"delivery": "proxy", "hosts": "api.example", "header": "x-api-key"}
    credentials.secret_set(actor=actor, team=team, name="API_KEY", value="proxied-key-value", **proxied)
    assert secret_values([box.pk]) == {box.pk: frozenset({"team-token-value", "own-file-value"})}


def test_a_secret_that_cannot_be_read_leaves_the_receiver_looking(db, team, make_sandbox, fake_engine, clean_workspace):
    """A sealed value the key file does not open (the key replaced) is logged and skipped: the
    receiver's look at the running sandboxes goes on, only that sandbox's blanking is missing."""
    from agents.services import secret_values
    from sandboxes.models import Secret
    from sandboxes.secrets import credentials
    from teams.permissions import SystemActor

    box, other = make_sandbox("secrets-unreadable"), make_sandbox("secrets-readable")
    credentials.secret_set(actor=SystemActor("test"), sandbox=box, name="BROKEN", value="broken-value-1")
    credentials.secret_set(actor=SystemActor("test"), sandbox=other, name="FINE", value="fine-value-123")
    Secret.objects.filter(name="BROKEN").update(ciphertext="not-a-fernet-token")
    assert secret_values([box.pk, other.pk]) == {other.pk: frozenset({"fine-value-123"})}
