"""Writes of agent activity: the receiver's batches of events, the retention sweep, and the
environment a sandbox's Claude Code is started with so that it exports to the receiver."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import AgentEvent


def record_events(batches: list[tuple[int, list[dict]]]) -> int:
    """Write the rows of several requests in one transaction (the receiver's writer thread calls
    this with what arrived in the last fraction of a second); rows of a sandbox deleted meanwhile
    are dropped. Returns how many were written."""
    from sandboxes.models import Sandbox

    wanted = {sandbox_id for sandbox_id, _ in batches}
    alive = set(Sandbox.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    events = [AgentEvent(sandbox_id=sandbox_id, **row) for sandbox_id, rows in batches if sandbox_id in alive for row in rows]
    with transaction.atomic():
        AgentEvent.objects.bulk_create(events, batch_size=500)
    return len(events)


def purge_old_events(*, now=None) -> int:
    """Delete the events older than AGENT_EVENTS_KEEP_DAYS (as the decision log keeps its rows)."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.AGENT_EVENTS_KEEP_DAYS)
    deleted, _ = AgentEvent.objects.filter(at__lt=cutoff).delete()
    return deleted


def records_prompts(team_id: int) -> bool:
    from teams.models import AgentPolicy

    return AgentPolicy.objects.filter(team_id=team_id, record_prompts=True).exists()


def telemetry_environment(sandbox) -> dict[str, str]:
    """What makes Claude Code in the sandbox export its events to the panel's receiver, which
    listens on the sandbox's own loopback (agents.receiver); prompts' text only where the team
    records prompts."""
    environment = {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{settings.AGENT_OTLP_PORT}",
        "OTEL_LOG_TOOL_DETAILS": "1",
        "OTEL_LOGS_EXPORT_INTERVAL": str(settings.AGENT_OTEL_LOGS_INTERVAL_MS),
        "OTEL_METRIC_EXPORT_INTERVAL": str(settings.AGENT_OTEL_METRICS_INTERVAL_MS),
    }
    if sandbox.team_id and records_prompts(sandbox.team_id):
        environment["OTEL_LOG_USER_PROMPTS"] = "1"
    return environment
