"""Reads of agent activity: a sandbox's timeline (filtered, newest first) and the tokens and cost
per day of a sandbox or of a team. Each is one query, whatever the number of rows shown."""

from datetime import timedelta

from django.db.models import Count, F, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from .models import EVENT_FIELDS, AgentEvent

USAGE_DAYS = 14


def agent_events(*, sandbox, kind: str = "", tool: str = "", search: str = "") -> QuerySet[AgentEvent]:
    """The sandbox's events, newest first: of one kind, of one tool, and whose command, path,
    model or decision holds `search` (as the card's and the API's filters say)."""
    rows = AgentEvent.objects.filter(sandbox=sandbox)
    if kind:
        rows = rows.filter(kind=kind)
    if tool:
        rows = rows.filter(tool__iexact=tool)
    if search:
        from django.db.models import Q

        rows = rows.filter(
            Q(summary__icontains=search) | Q(model__icontains=search) | Q(name__icontains=search) | Q(decision__iexact=search)
        )
    return rows.order_by("-at", "-id")


def daily_usage(*, sandbox=None, team=None, days: int = USAGE_DAYS) -> list[dict]:
    """Tokens, cost and API requests per day (UTC) of the last `days` days, oldest first, a day
    without any included as zeros: of one sandbox, or of every sandbox of a team."""
    today = timezone.now().date()
    first = today - timedelta(days=days - 1)
    rows = AgentEvent.objects.filter(kind=AgentEvent.Kind.API_REQUEST, at__date__gte=first)
    rows = rows.filter(sandbox=sandbox) if sandbox is not None else rows.filter(sandbox__team=team)
    sums = {
        r["day"]: r
        for r in rows.annotate(day=TruncDate("at"))
        .values("day")
        .annotate(
            token_sum=Sum(F("input_tokens") + F("output_tokens") + F("cache_read_tokens") + F("cache_creation_tokens")),
            cost=Sum("cost_usd"),
            requests=Count("id"),
        )
    }
    found = []
    for n in range(days):
        day = first + timedelta(days=n)
        r = dict(sums.get(day) or {})
        found.append({"day": day, "tokens": r.get("token_sum") or 0, "cost": r.get("cost") or 0, "requests": r.get("requests") or 0})
    return found


AUDIT_PREFIX = "agent."  # the agent's events answer the audit filters' action as agent.<kind>


def agent_events_for_audit(*, user, filters: dict) -> QuerySet[AgentEvent] | None:
    """The agent's events an audit export adds (audit.export): of the sandboxes `user` sees (a
    superuser: all), narrowed as the audit filters narrow the audit events (sandbox name, team,
    time, an action prefix read against "agent.<kind>"). None when an actor is asked for (the
    agent is nobody's account) or the action prefix names no agent event."""
    from teams.permissions import team_ids_visible

    if filters.get("actor"):
        return None
    rows = AgentEvent.objects.all()
    if not getattr(user, "is_superuser", False):
        rows = rows.filter(sandbox__team_id__in=team_ids_visible(user=user))
    if action := filters.get("action"):
        kinds = [k for k in AgentEvent.Kind.values if f"{AUDIT_PREFIX}{k}".startswith(action)]
        if not kinds:
            return None
        rows = rows.filter(kind__in=kinds)
    if sandbox := filters.get("sandbox"):
        rows = rows.filter(sandbox__name=sandbox)
    if team := filters.get("team"):
        rows = rows.filter(sandbox__team_id=int(team))
    if since := filters.get("since"):
        rows = rows.filter(at__gte=since)
    if until := filters.get("until"):
        rows = rows.filter(at__lte=until)
    return rows


EVIDENCE_LIMIT = 20_000  # the newest events an incident's evidence keeps (the archive is read whole by people)


def evidence_lines(sandbox, *, limit: int = EVIDENCE_LIMIT) -> bytes:
    """The sandbox's agent events as JSON Lines, oldest first (the newest `limit` of them), for
    an incident's evidence archive (incidents.services): what the agent did before it was frozen."""
    import json

    newest = list(AgentEvent.objects.filter(sandbox=sandbox).order_by("-at", "-id").values(*EVENT_FIELDS)[:limit])
    return b"".join(json.dumps(row, sort_keys=True, default=str).encode() + b"\n" for row in reversed(newest))
