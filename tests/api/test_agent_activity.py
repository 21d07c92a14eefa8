"""A sandbox's agent activity through the API: the page card's rows and filters, paged; refused
where the page refuses it (a stranger gets 404, bad filters 400)."""

from pathlib import Path

import pytest

from agents import otlp, services
from teams.models import Team

from .helpers import auth, member, token_for

pytestmark = pytest.mark.django_db
SAMPLE = (Path(__file__).parent.parent / "agents" / "claude_logs.json").read_bytes()


def test_the_agent_activity_is_listed_newest_first_and_filtered(
    client, django_user_model, team, make_sandbox, fake_engine, clean_workspace
):
    box = make_sandbox("agent")
    services.record_events([(box.pk, otlp.event_rows(SAMPLE, record_prompts=False))])
    token = token_for(member(django_user_model, "vic", team, "viewer"), "read")
    url = f"/api/v1/sandboxes/{box.pk}/agent-activity/"
    shown = client.get(url, **auth(token))
    assert shown.status_code == 200, shown.content
    body = shown.json()
    assert body["count"] == 20 and body["next"] is None
    ats = [e["at"] for e in body["results"]]
    assert ats == sorted(ats, reverse=True)
    tools = client.get(url + "?kind=tool_result", **auth(token)).json()["results"]
    assert [e["tool"] for e in tools] == ["Write", "Edit", "Read", "Bash"]
    assert tools[-1]["summary"] == "echo hello-from-bash > /workspace/Projects/out.txt" and tools[-1]["success"] is True
    api = client.get(url + "?kind=api_request&q=claude", **auth(token)).json()["results"]
    assert len(api) == 5 and api[-1]["input_tokens"] == 4552 and api[-1]["cost_usd"] == "0.019148"
    assert client.get(url + "?tool=read", **auth(token)).json()["count"] == 2  # its decision and its result
    assert client.get(url + "?kind=bogus", **auth(token)).status_code == 400
    outsider = token_for(member(django_user_model, "out", Team.objects.create(name="Other", slug="other"), "admin"))
    assert client.get(url, **auth(outsider)).status_code == 404
