"""A team's policy for Claude Code in its sandboxes, on the real engine: mounted read-only,
root's, the same bytes as set, and taken at the next start when it changes."""

import json

import pytest

from agents.services import telemetry_environment
from sandboxes import engine, managed_settings, policy
from teams import agent_policy
from teams.permissions import SystemActor
from tests.support.docker import docker_cli
from tests.support.sandboxes import act

pytestmark = [pytest.mark.docker, pytest.mark.django_db]

TARGET = policy.MANAGED_SETTINGS_TARGET
ACTOR = SystemActor("test")
DENY = {"permissions": {"deny": ["Bash(curl *)"], "disableBypassPermissionsMode": "disable"}}


def inside(sandbox, script: str) -> tuple[int, str]:
    done = docker_cli("exec", sandbox.container_id, "sh", "-c", script, check=False)
    return done.returncode, (done.stdout + done.stderr).strip()


def policy_in(sandbox) -> dict:
    """The sandbox's managed settings without the panel's telemetry environment (every file has it)."""
    given = json.loads(inside(sandbox, f"cat {TARGET}")[1])
    assert given.pop("env") == telemetry_environment(sandbox)
    return given


def test_the_policy_is_mounted_read_only_and_root_owned_and_the_agent_cannot_change_it(team, make_sandbox, clean_docker):
    agent_policy.agent_policy_set(actor=ACTOR, team=team, managed_settings=DENY, record_prompts=False)
    sandbox = make_sandbox("governed")
    data = engine.engine_for().inspect_container(sandbox.container_id)
    mount = next(m for m in data["Mounts"] if m["Destination"] == TARGET)
    assert mount["RW"] is False and mount["Type"] == "bind"
    assert data["Config"]["Labels"][managed_settings.LABEL] == agent_policy.digest(managed_settings.delivered(sandbox))
    assert inside(sandbox, f"id -u; stat -c '%u %g %a' {TARGET}")[1].splitlines() == ["1000", "0 0 644"]
    assert policy_in(sandbox) == DENY
    attempts = (f"echo '{{}}' > {TARGET}", f"rm -f {TARGET}", f"mv {TARGET} /tmp/x", f"chmod 666 {TARGET}", "touch /etc/claude-code/x")
    for attempt in attempts:
        code, _out = inside(sandbox, attempt)
        assert code != 0, attempt
    assert policy_in(sandbox) == DENY


def test_a_changed_policy_is_in_force_at_the_next_start_and_none_leaves_the_telemetry_alone(team, make_sandbox, clean_docker):
    agent_policy.agent_policy_set(actor=ACTOR, team=team, managed_settings=DENY, record_prompts=False)
    sandbox = make_sandbox("governed")
    wider = {**DENY, "disableAllHooks": True}
    agent_policy.agent_policy_set(actor=ACTOR, team=team, managed_settings=wider, record_prompts=False)
    assert policy_in(sandbox) == DENY  # until the next start
    sandbox = act(sandbox, "restart")
    assert policy_in(sandbox) == wider
    agent_policy.agent_policy_set(actor=ACTOR, team=team, managed_settings={}, record_prompts=False)
    sandbox = act(sandbox, "restart")
    assert policy_in(sandbox) == {}
    labels = engine.engine_for().inspect_container(sandbox.container_id)["Config"]["Labels"]
    assert labels[managed_settings.LABEL] == agent_policy.digest({"env": telemetry_environment(sandbox)})


def test_the_sandbox_page_shows_the_policy_and_the_checklist_says_whether_it_is_in_force(team, make_sandbox, clean_docker, logged_in):
    from sandboxes import checklist

    sandbox = make_sandbox("governed")
    agent_policy.agent_policy_set(actor=ACTOR, team=team, managed_settings=DENY, record_prompts=False)
    page = logged_in.get(f"/sandboxes/{sandbox.pk}/").content.decode()
    assert "Policy for Claude Code" in page and "Bash(curl *)" in page and agent_policy.digest(DENY) in page
    checks = {c.label: c for c in checklist.run_checks(sandbox)}
    check = checks["The team's policy for Claude Code is in force"]
    assert check.ok is False and "next start" in check.detail
    assert checks["The container's real settings meet the policy"].ok is True  # a policy to take is no drift
    sandbox = act(sandbox, "restart")
    check = next(c for c in checklist.run_checks(sandbox) if "Claude Code" in c.label)
    assert check.ok is True
