"""The "Agent activity" card of a sandbox's page, its filters, and the tokens-and-cost charts of
a sandbox and of a team: rows of the real sample, shown to who sees the sandbox, to nobody else."""

import html
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from agents import otlp, services
from agents.models import AgentEvent
from sandboxes.models import Sandbox
from teams.models import AgentPolicy, Team

pytestmark = pytest.mark.django_db
SAMPLE = (Path(__file__).parent / "claude_logs.json").read_bytes()


@pytest.fixture
def worked(team) -> Sandbox:
    """A sandbox whose agent ran the captured session (20 events), and an API request 3 days ago."""
    sandbox = Sandbox.objects.create(name="worked", team=team, image="x", memory_mb=256, cpus=1, pids_limit=64)
    services.record_events([(sandbox.pk, otlp.event_rows(SAMPLE, record_prompts=False))])
    AgentEvent.objects.create(
        sandbox=sandbox,
        at=timezone.now() - timedelta(days=3),
        kind="api_request",
        input_tokens=700,
        output_tokens=300,
        cost_usd=Decimal("0.5"),
    )
    return sandbox


def get(client, url: str, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200, response.status_code
    return html.unescape(response.content.decode())


def rows(page: str) -> list[str]:
    return re.findall(r"<tr class=\"agent-[^\"]*\">(.*?)</tr>", page, re.S)


def test_the_card_shows_the_timeline_newest_first_with_commands_tokens_and_cost(client, admin_user, worked):
    client.force_login(admin_user)
    page = get(client, f"/sandboxes/{worked.pk}/")
    assert "Agent activity" in page and f"/sandboxes/{worked.pk}/agent/" in page
    card = get(client, f"/sandboxes/{worked.pk}/agent/")
    assert len(rows(card)) == 21 and 'hx-trigger="every 3s"' in card
    assert "echo hello-from-bash > /workspace/Projects/out.txt" in card and "/workspace/Projects/notes.md" in card
    assert "the team does not record prompts" in card and "Run the scripted task" not in card
    assert "<td>1000</td><td>0.5000</td>" in rows(card)[-1]  # the oldest (3 days ago) last, its tokens and cost


def test_the_card_filters_by_kind_tool_and_text_and_says_what_is_wrong(client, admin_user, worked):
    client.force_login(admin_user)
    assert len(rows(get(client, f"/sandboxes/{worked.pk}/agent/", kind="api_request"))) == 6
    bash = rows(get(client, f"/sandboxes/{worked.pk}/agent/", tool="bash"))
    assert len(bash) == 2 and all("Bash" in r for r in bash)
    found = rows(get(client, f"/sandboxes/{worked.pk}/agent/", q="notes.md"))
    assert len(found) == 1 and "Write" in found[0]
    bad = get(client, f"/sandboxes/{worked.pk}/agent/", kind="nonsense")
    assert "Kind: Select a valid choice" in bad and len(rows(bad)) == 21


def test_the_sandbox_and_team_charts_sum_tokens_and_cost_per_day(client, admin_user, worked, team):
    client.force_login(admin_user)
    today = AgentEvent.objects.filter(sandbox=worked, kind="api_request", at__date=timezone.now().date())
    tokens = sum(e.tokens for e in today) + 1000
    chart = get(client, f"/sandboxes/{worked.pk}/agent/usage/")
    assert f"<strong>{tokens}</strong> tokens" in chart and chart.count("<rect") == 14
    assert "6 API requests" in chart
    team_chart = get(client, f"/teams/{team.slug}/agent-usage/")
    assert f"<strong>{tokens}</strong> tokens" in team_chart
    assert "/agent-usage/" in get(client, f"/teams/{team.slug}/")


def test_prompts_are_said_to_be_recorded_only_where_the_team_records_them(client, admin_user, worked, team):
    client.force_login(admin_user)
    assert "the team does not record their text" in get(client, f"/sandboxes/{worked.pk}/")
    AgentPolicy.objects.create(team=team, record_prompts=True)
    assert "the team does not record their text" not in get(client, f"/sandboxes/{worked.pk}/")


def test_who_does_not_see_the_sandbox_sees_none_of_its_activity(client, django_user_model, worked, team):
    other = Team.objects.create(slug="other", name="Other")
    stranger = django_user_model.objects.create_user("stranger", "", "pw-stranger-123")
    from teams.models import Membership

    Membership.objects.create(user=stranger, team=other, role=Membership.Role.ADMIN)
    client.force_login(stranger)
    assert client.get(f"/sandboxes/{worked.pk}/agent/").status_code == 404
    assert client.get(f"/sandboxes/{worked.pk}/agent/usage/").status_code == 404
    assert client.get(f"/teams/{team.slug}/agent-usage/").status_code == 404


def test_old_events_go_after_the_days_kept(worked, settings):
    from agents.tasks import agent_events_purge_task

    settings.AGENT_EVENTS_KEEP_DAYS = 2
    assert agent_events_purge_task() == 1
    assert "agents.tasks.agent_events_purge_task" in {e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()}
    assert AgentEvent.objects.filter(sandbox=worked).count() == 20
