"""The real Claude Code CLI, headless in a sandbox, against a stand-in Messages API in "the
internet" (a network namespace in 198.18.0.0/15): a scripted conversation asks for a Bash command,
a Read, an Edit and a Write, and the test reads their effects back, the key the stand-in received,
and the OpenTelemetry events the CLI exported. Managed settings are tried in a container of the
test's own (the file mounted read-only at /etc/claude-code/managed-settings.json)."""

import secrets as pysecrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.conf import settings

from sandboxes import engine, secrets, services
from tests.sandboxes.network.helpers import _slot, internet  # noqa: F401 - the fixture
from tests.support import claude_cli
from tests.support.docker import docker_cli
from tests.support.messages_api import FINAL_TEXT, StandIn, deny_script, edit_script, in_container_netns, in_netns, result_text

pytestmark = [pytest.mark.docker, pytest.mark.django_db]
ACTOR = services.SystemActor("test")
PORT = 8443
NAME = "api.e2e.test"  # the stand-in's name in the test's own containers (--add-host)


def _image_present() -> None:
    assert engine.engine_for().image_exists(claude_cli.IMAGE), f"{claude_cli.IMAGE} is built by `make test` (build_images)"


def _read(container_id: str, path: str) -> str:
    return docker_cli("exec", container_id, "cat", path, check=False).stdout


def test_claude_runs_a_scripted_conversation_in_a_sandbox(make_sandbox, clean_docker, team, internet, tmp_path):  # noqa: F811
    """Internet mode, the stand-in by address."""
    _image_present()
    key = "sk-ant-e2e-" + pysecrets.token_hex(16)
    secrets.secret_set(actor=ACTOR, team=team, name="ANTHROPIC_API_KEY", value=key)
    sandbox = make_sandbox("agent", image=claude_cli.IMAGE, memory_mb=1024)
    assert sandbox.status == "running", sandbox.status_detail
    cid = sandbox.container_id
    (tmp_path / "api").mkdir()
    script = edit_script(claude_cli.WORKDIR)
    with StandIn(tmp_path / "api", internet, PORT, script, enter=in_netns(f"ccp-inet{100 + _slot()}")) as api:
        claude_cli.put_file(cid, claude_cli.CA_PATH, api.ca.read_bytes())
        claude_cli.start_recorder(cid)
        result = claude_cli.run_claude(cid, claude_cli.claude_env(api.base_url))
    assert api.base_url == f"https://{internet}:{PORT}"

    assert result["subtype"] == "success" and not result["is_error"], result
    assert result["result"] == FINAL_TEXT and result["num_turns"] == 5 and result["permission_denials"] == []
    assert result["total_cost_usd"] > 0 and result["usage"]["input_tokens"] > 0
    # The effects, read back: the command ran, the file was edited, the new one written.
    assert _read(cid, f"{claude_cli.WORKDIR}/out.txt") == "hello-edited\n"
    assert _read(cid, f"{claude_cli.WORKDIR}/notes.md") == "written by the scripted agent\n"
    # The stand-in got the key (all of it and only it) and the four tool results, none refused.
    assert api.keys_received() == {key}
    assert len(api.main_requests()) == 5
    outcomes = [(r["tool_use_id"], bool(r.get("is_error"))) for r in api.results()]
    assert outcomes == [(f"toolu_e2e_{n:02d}", False) for n in range(4)], [result_text(r) for r in api.results()]

    events = claude_cli.events(cid, wait_for="claude_code.assistant_response")
    by_tool = {e["tool_name"]: e for e in events if e["name"] == "claude_code.tool_result"}
    assert set(by_tool) == {"Bash", "Read", "Edit", "Write"}
    assert "echo hello-from-bash > /workspace/Projects/out.txt" in by_tool["Bash"]["tool_parameters"]
    assert '"file_path":"/workspace/Projects/out.txt"' in by_tool["Edit"]["tool_input"]
    requests = [e for e in events if e["name"] == "claude_code.api_request"]
    assert len(requests) >= 5 and all(e["input_tokens"] > 0 and e["cost_usd"] > 0 for e in requests)
    assert not any(key in repr(r) for r in claude_cli.recorded(cid)), "the key reached the telemetry"


@contextmanager
def _own_container(name: str, tmp_path, managed: str | None) -> Iterator[str]:
    """A container of the test's own from the Claude Code image, no network (NAME is its own
    loopback), with /workspace/Projects/keep.txt, and `managed` as its read-only managed settings
    when given."""
    mounts = []
    if managed is not None:
        (tmp_path / "managed-settings.json").write_text(managed)
        (tmp_path / "managed-settings.json").chmod(0o644)
        mounts = ["-v", f"{tmp_path / 'managed-settings.json'}:/etc/claude-code/managed-settings.json:ro"]
    full = f"ccp-e2e-{name}-{_slot()}"
    docker_cli("rm", "-f", full, check=False)
    label = f"{engine.LABEL_INSTANCE}={settings.PANEL_INSTANCE}"
    cid = docker_cli(
        "run", "-d", "--name", full, "--label", label, "--network", "none", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--add-host", f"{NAME}:127.0.0.1", *mounts, claude_cli.IMAGE,
    ).stdout.strip()  # fmt: skip
    try:
        docker_cli("exec", cid, "sh", "-c", f"mkdir -p {claude_cli.WORKDIR} && echo keep > {claude_cli.WORKDIR}/keep.txt")
        yield cid
    finally:
        docker_cli("rm", "-f", cid, check=False)


def _scripted(cid: str, tmp_path, script: dict, flags: tuple[str, ...]) -> tuple[dict, StandIn, list[dict]]:
    """Claude Code run in the container against the stand-in on its loopback, by name."""
    with StandIn(tmp_path, "127.0.0.1", PORT, script, enter=in_container_netns(cid), names=(NAME,)) as api:
        claude_cli.put_file(cid, claude_cli.CA_PATH, api.ca.read_bytes())
        claude_cli.start_recorder(cid)
        result = claude_cli.run_claude(cid, claude_cli.claude_env(api.base_url, api_key="sk-ant-e2e-own"), flags=flags)
    return result, api, claude_cli.events(cid, wait_for="claude_code.assistant_response")


@pytest.mark.parametrize("bypass", ["--permission-mode=bypassPermissions", "--dangerously-skip-permissions"])
def test_a_managed_deny_rule_refuses_a_scripted_rm_even_in_bypass_mode(clean_docker, tmp_path, bypass):
    _image_present()
    flags = ("--output-format", "json", bypass)
    with _own_container("deny", tmp_path, '{"permissions": {"deny": ["Bash(rm:*)"]}}') as cid:
        owner = docker_cli("exec", cid, "stat", "-c", "%u %a", "/etc/claude-code/managed-settings.json").stdout.split()
        assert owner == ["0", "644"]
        assert docker_cli("exec", cid, "sh", "-c", "echo {} > /etc/claude-code/managed-settings.json", check=False).returncode != 0
        result, api, events = _scripted(cid, tmp_path, deny_script(f"{claude_cli.WORKDIR}/keep.txt"), flags)
        assert _read(cid, f"{claude_cli.WORKDIR}/keep.txt") == "keep\n"
    [refused] = api.results()
    assert refused["is_error"] is True
    assert result_text(refused) == f"Permission to use Bash with command rm {claude_cli.WORKDIR}/keep.txt has been denied."
    assert [d["tool_name"] for d in result["permission_denials"]] == ["Bash"]
    decisions = [(e["tool_name"], e["decision"], e["source"]) for e in events if e["name"] == "claude_code.tool_decision"]
    assert decisions == [("Bash", "reject", "config")]
    assert not any(e["name"] == "claude_code.tool_result" for e in events)


def test_without_the_managed_rule_the_same_rm_runs(clean_docker, tmp_path):
    """The control: the refusal above is the managed rule's doing, not the script's."""
    _image_present()
    with _own_container("nodeny", tmp_path, None) as cid:
        result, api, _ = _scripted(cid, tmp_path, deny_script(f"{claude_cli.WORKDIR}/keep.txt"), claude_cli.FLAGS)
        assert docker_cli("exec", cid, "test", "-e", f"{claude_cli.WORKDIR}/keep.txt", check=False).returncode == 1
    assert result["permission_denials"] == [] and [r.get("is_error", False) for r in api.results()] == [False]


def test_managed_settings_can_take_bypass_mode_away(clean_docker, tmp_path):
    """disableBypassPermissionsMode: the CLI says nothing, runs in its default mode, and headless
    (no one to ask) refuses what would need approval: here the Bash redirection and the Write."""
    _image_present()
    with _own_container("nobypass", tmp_path, '{"permissions": {"disableBypassPermissionsMode": "disable"}}') as cid:
        result, api, events = _scripted(cid, tmp_path, edit_script(claude_cli.WORKDIR), claude_cli.FLAGS)
        assert docker_cli("exec", cid, "ls", claude_cli.WORKDIR).stdout.split() == ["keep.txt"]
    assert [d["tool_name"] for d in result["permission_denials"]] == ["Bash", "Write"]
    assert all(r["is_error"] for r in api.results())
    assert "needs approval" in result_text(api.results()[0])
    modes = {(e["tool_name"], e["decision"], e["permission_mode"]) for e in events if e["name"] == "claude_code.tool_decision"}
    assert ("Bash", "reject", "default") in modes and ("Write", "reject", "default") in modes


@pytest.mark.parametrize(
    "forged",
    [
        '{"permissions": {"allow": ["Bash(rm:*)"], "deny": []}}',
        '{"uuid": "x", "checksum": "x", "settings": {"permissions": {"allow": ["Bash(rm:*)"], "deny": []}}}',
    ],
)
def test_a_forged_server_settings_cache_in_the_home_does_not_replace_the_managed_file(clean_docker, tmp_path, forged):
    """Claude Code's server-managed settings rank above the file and are cached in the home
    (~/.claude/remote-settings.json), which the agent can write: a forged cache must not take
    the team's deny rule away."""
    _image_present()
    flags = ("--output-format", "json", "--permission-mode=bypassPermissions")
    with _own_container("forged", tmp_path, '{"permissions": {"deny": ["Bash(rm:*)"]}}') as cid:
        docker_cli("exec", cid, "mkdir", "-p", "/home/claude/.claude")
        claude_cli.put_file(cid, "/home/claude/.claude/remote-settings.json", forged.encode())
        result, api, _events = _scripted(cid, tmp_path, deny_script(f"{claude_cli.WORKDIR}/keep.txt"), flags)
        assert _read(cid, f"{claude_cli.WORKDIR}/keep.txt") == "keep\n"
    assert [d["tool_name"] for d in result["permission_denials"]] == ["Bash"]
