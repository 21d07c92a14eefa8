"""A team's policy for Claude Code: what the managed settings may hold, who sets them, and what
a refusal leaves (the fast tier; the delivery into a sandbox: tests/sandboxes/test_managed_settings.py)."""

import hashlib
import json
import os
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied

from agents.services import telemetry_environment
from audit.models import AuditEvent
from sandboxes import managed_settings
from teams import agent_policy
from teams.models import AgentPolicy
from teams.services import TeamError
from tests.api.helpers import auth, member, token_for

pytestmark = pytest.mark.django_db

DENY = {"permissions": {"deny": ["Bash(curl *)", "Read(./.env)"], "disableBypassPermissionsMode": "disable"}}


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ([1, 2], "must be a JSON object"),
        ({"premissions": {}}, "Unknown setting 'premissions'"),
        ({"permissions": {"deny": "Bash"}}, "permissions.deny must be a list of strings"),
        ({"permissions": {"defaultMode": "yolo"}}, "permissions.defaultMode must be one of"),
        ({"permissions": {"disableBypassPermissionsMode": True}}, 'must be "disable"'),
        ({"permissions": {"alow": []}}, "Unknown permissions setting 'alow'"),
        ({"disableAllHooks": "yes"}, "disableAllHooks must be true or false"),
        ({"env": {"A": 1}}, "env must map names to strings"),
        ({"companyAnnouncements": ["x" * 70_000]}, "larger than 64 KiB"),
        ({"hooks": {"a": [[[[[[[[[[[[[[]]]]]]]]]]]]]]}}, "nest deeper"),
    ],
)
def test_bad_managed_settings_are_refused_with_a_message_and_change_nothing(team, admin_user, value, words):
    agent_policy.agent_policy_set(actor=admin_user, team=team, managed_settings=DENY, record_prompts=False)
    with pytest.raises(TeamError, match=words):
        agent_policy.agent_policy_set(actor=admin_user, team=team, managed_settings=value, record_prompts=True)
    row = AgentPolicy.objects.get(team=team)
    assert row.managed_settings == DENY and row.record_prompts is False


def test_a_good_policy_is_saved_and_audited_with_its_digest_and_the_keys_changed(team, admin_user):
    agent_policy.agent_policy_set(actor=admin_user, team=team, managed_settings=DENY, record_prompts=True)
    agent_policy.agent_policy_set(actor=admin_user, team=team, managed_settings={**DENY, "disableAllHooks": True}, record_prompts=True)
    events = list(AuditEvent.objects.filter(action="team.agent_policy_set").order_by("seq"))
    assert [e.details["keys_changed"] for e in events] == [["permissions"], ["disableAllHooks"]]
    assert events[0].details["from"] == "" and events[0].details["to"] == agent_policy.digest(DENY) == events[1].details["from"]
    assert AgentPolicy.objects.get(team=team).updated_by == admin_user


def test_operators_cannot_set_the_policy_by_service_page_or_api(client, team, django_user_model):
    operator = member(django_user_model, "op", team, "operator")
    with pytest.raises(PermissionDenied):
        agent_policy.agent_policy_set(actor=operator, team=team, managed_settings=DENY, record_prompts=False)
    client.force_login(operator)
    page = client.post(f"/teams/{team.slug}/agent-policy/", {"managed_settings": json.dumps(DENY)})
    api = client.put(
        f"/api/v1/teams/{team.pk}/agent-policy/", {"managed_settings": DENY}, content_type="application/json", **auth(token_for(operator))
    )
    assert page.status_code == 403 and api.status_code == 403
    assert not AgentPolicy.objects.filter(team=team).exists()
    assert client.get(f"/teams/{team.slug}/").status_code == 200  # the card, read-only: no form
    assert b'action="/teams/default/agent-policy/"' not in client.get(f"/teams/{team.slug}/").content


def test_the_page_refuses_bad_json_with_a_message_and_keeps_what_was_typed(logged_in, team):
    response = logged_in.post(f"/teams/{team.slug}/agent-policy/", {"managed_settings": '{"permissions": {'})
    assert response.status_code == 400 and b"Not valid JSON" in response.content and b"{&quot;permissions&quot;: {" in response.content
    assert not AgentPolicy.objects.filter(team=team).exists()
    response = logged_in.post(f"/teams/{team.slug}/agent-policy/", {"managed_settings": json.dumps(DENY), "record_prompts": "1"})
    assert response.status_code == 302
    row = AgentPolicy.objects.get(team=team)
    assert row.managed_settings == DENY and row.record_prompts


def test_the_api_reads_and_refuses_as_the_page(client, team, admin_user):
    token = token_for(admin_user)
    bad = client.put(
        f"/api/v1/teams/{team.pk}/agent-policy/", {"managed_settings": {"model": 3}}, content_type="application/json", **auth(token)
    )
    assert bad.status_code == 400 and "model must be a string" in json.dumps(bad.json())
    good = client.put(f"/api/v1/teams/{team.pk}/agent-policy/", {"managed_settings": DENY}, content_type="application/json", **auth(token))
    assert good.status_code == 200 and good.json()["digest"] == agent_policy.digest(DENY)
    assert client.get(f"/api/v1/teams/{team.pk}/agent-policy/", **auth(token)).json()["managed_settings"] == DENY


def test_the_file_holds_the_team_s_settings_and_the_panel_s_telemetry_root_owned_and_0644(
    team, admin_user, make_sandbox, fake_engine, clean_workspace
):
    sandbox = make_sandbox("governed")
    path, tag = managed_settings.file_for(sandbox)  # no policy: the telemetry environment alone
    with open(path, "rb") as fh:
        assert json.loads(fh.read()) == {"env": telemetry_environment(sandbox)}
    own = {**DENY, "env": {"CLAUDE_CODE_ENABLE_TELEMETRY": "0", "X": "y"}}
    agent_policy.agent_policy_set(actor=admin_user, team=team, managed_settings=own, record_prompts=False)
    path, tag = managed_settings.file_for(sandbox)
    with open(path, "rb") as fh:
        given = json.loads(fh.read())
    # The team's own env is kept, but the panel's telemetry wins over it.
    assert given == {**DENY, "env": {"X": "y", **telemetry_environment(sandbox)}} and given["env"]["CLAUDE_CODE_ENABLE_TELEMETRY"] == "1"
    assert tag == agent_policy.digest(given) and path.endswith(f"settings-{hashlib.sha256(agent_policy.canonical(given)).hexdigest()}.json")
    # A file changed on the host is written again as it should be.
    Path(path).write_text("{}")
    assert managed_settings.file_for(sandbox) == (path, tag) and json.loads(Path(path).read_bytes()) == given
    info = os.stat(path)
    assert info.st_mode & 0o777 == 0o644 and info.st_uid == (0 if os.geteuid() == 0 else os.geteuid())
