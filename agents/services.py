"""Writes of agent activity: the receiver's batches of events, the retention sweep, and the
environment a sandbox's Claude Code is started with so that it exports to the receiver."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from .models import AgentEvent

log = logging.getLogger(__name__)

# The columns the receiver writes, in order (every field of AgentEvent but its id).
_FIELDS = [f for f in AgentEvent._meta.concrete_fields if not f.primary_key]
_PREPARED = {"at", "cost_usd", "attributes"}  # values the database's driver needs converted (the rest are plain)


def record_events(batches: list[tuple[int, list[dict]]]) -> int:
    """Write the rows of several requests in one transaction (the receiver's writer thread calls
    this with what arrived in the last fraction of a second); rows of a sandbox deleted meanwhile
    are dropped. Returns how many were written.

    One INSERT a batch, its values converted by the fields themselves only where the driver needs
    it: bulk_create prepares every field of every row (~160 µs a row, most of the receiver's time
    at a few thousand events a second)."""
    from sandboxes.models import Sandbox

    wanted = {sandbox_id for sandbox_id, _ in batches}
    alive = set(Sandbox.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    conn = connections[AgentEvent.objects.db]
    params = []
    for sandbox_id, rows in batches:
        if sandbox_id in alive:
            for row in rows:
                row = {**row, "sandbox": sandbox_id}
                params.append([f.get_db_prep_save(row[f.name], conn) if f.name in _PREPARED else row.get(f.name) for f in _FIELDS])
    if not params:
        return 0
    table, quote = AgentEvent._meta.db_table, conn.ops.quote_name
    columns = ", ".join(quote(str(f.column)) for f in _FIELDS)
    sql = f"INSERT INTO {quote(table)} ({columns}) VALUES ({', '.join(['%s'] * len(_FIELDS))})"  # noqa: S608 - the model's own names
    with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
        cursor.executemany(sql, params)
    return len(params)


def purge_old_events(*, now=None) -> int:
    """Delete the events older than AGENT_EVENTS_KEEP_DAYS (as the decision log keeps its rows)."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.AGENT_EVENTS_KEEP_DAYS)
    deleted, _ = AgentEvent.objects.filter(at__lt=cutoff).delete()
    return deleted


SECRET_MIN_LENGTH = 8  # shorter values (a "1", a "true") would blank ordinary words out of the events


@sensitive_variables()
def secret_values(sandbox_ids) -> dict[int, frozenset[str]]:
    """sandbox id -> the values of the env and file secrets it receives (SECRET_MIN_LENGTH
    characters or more), which the receiver blanks out of its events (otlp.blank_secrets); a
    proxy secret's value never reaches the sandbox."""
    from sandboxes.models import Sandbox, Secret
    from sandboxes.secrets.credentials import secrets_for
    from sandboxes.secrets.vault import VaultError

    found: dict[int, frozenset[str]] = {}
    for sandbox in Sandbox.objects.filter(pk__in=list(sandbox_ids)):
        try:
            values = secrets_for(sandbox).values()
        except (VaultError, OSError) as exc:  # the listeners still open; only the blanking is missing
            log.warning("the secrets of sandbox %s cannot be read to blank them out of its events: %s", sandbox.pk, exc)
            continue
        found[sandbox.pk] = frozenset(v for delivery, v in values if delivery != Secret.Delivery.PROXY and len(v) >= SECRET_MIN_LENGTH)
    return found


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
