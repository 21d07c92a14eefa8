"""The agent-activity card of a sandbox's page (its timeline, polled as the refused-connections
card is) and the tokens-and-cost charts of a sandbox and of a team."""

from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from sandboxes.selectors import visible_sandbox_or_404
from teams.models import Team
from teams.permissions import user_role

from . import charts, selectors
from .forms import AgentFilterForm

PAGE_SIZE = 50


def sandbox_agent_activity(request: HttpRequest, pk: int) -> HttpResponse:
    """The sandbox's agent events, newest first, a page at a time, as the card's filters say."""
    sandbox = visible_sandbox_or_404(user=request.user, pk=pk)
    form = AgentFilterForm(request.GET)
    form.is_valid()
    kept = {k: v for k, v in form.cleaned_data.items() if v}
    rows = selectors.agent_events(sandbox=sandbox, kind=kept.get("kind", ""), tool=kept.get("tool", ""), search=kept.get("q", ""))
    context = {
        "sandbox": sandbox,
        "page": Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page")),
        "query": urlencode(kept),
        "problems": form.problems(),
    }
    return render(request, "agents/_activity.html", context)


def _usage(request: HttpRequest, days: list[dict], here: str) -> HttpResponse:
    context = {
        "bars": charts.bars(days),
        "width": charts.WIDTH,
        "height": charts.HEIGHT,
        "tokens": sum(d["tokens"] for d in days),
        "cost": sum(d["cost"] for d in days),
        "requests": sum(d["requests"] for d in days),
        "days": len(days),
        "here": here,
    }
    return render(request, "agents/_usage.html", context)


def sandbox_agent_usage(request: HttpRequest, pk: int) -> HttpResponse:
    sandbox = visible_sandbox_or_404(user=request.user, pk=pk)
    return _usage(request, selectors.daily_usage(sandbox=sandbox), request.path)


def team_agent_usage(request: HttpRequest, slug: str) -> HttpResponse:
    team = get_object_or_404(Team, slug=slug)
    if user_role(user=request.user, team=team) is None:
        raise Http404("No such team.")
    return _usage(request, selectors.daily_usage(team=team), request.path)
