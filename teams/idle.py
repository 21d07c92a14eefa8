"""The idle rule of a team's policy: a running sandbox with no terminal open whose CPU stayed
under the team's threshold for its number of minutes is stopped, audited as `sandbox.idle_stop`
(then `sandbox.stop.done` when the stop is carried out, like any stop).

`idle_sweep` runs every TEAM_IDLE_CHECK_SECONDS (Celery beat, teams.tasks). At each look it reads
Docker's CPU counters once per sandbox (one-shot stats, a few milliseconds) and keeps them
(IdleWatch), so the CPU it judges is the average over the whole time since the last look, the
same figure the stats chart shows (percent of one CPU): a burst between two looks is not missed.

What is never stopped: a sandbox with an open terminal (someone is there, even if quiet), a
paused one (pausing is a person's, or an incident's, choice to keep its processes as they
are), and one busy with another action or held by an incident (tried again at the next look).
Any of these, or a restarted container, starts the idle time afresh.
"""

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.models import AuditEvent
from sandboxes import engine, live
from sandboxes.live.stats import figures
from sandboxes.models import Sandbox, TerminalSession
from sandboxes.services.auditing import audit
from sandboxes.services.claims import claim, enqueue
from sandboxes.services.errors import SandboxError

from .models import IdleWatch, TeamPolicy
from .permissions import SystemActor

log = logging.getLogger(__name__)
S = Sandbox.Status
ACTOR = SystemActor("idle-rule")
KEPT = ("_cpu_total", "_cpu_system", "_cpus", "rx", "tx", "t")  # what figures() needs of the last look

Sampler = Callable[[Sandbox], dict[str, Any]]


def _stats_once(sandbox: Sandbox) -> dict[str, Any]:
    return engine.engine_for(sandbox).stats_once(sandbox.container_id)


def _has_open_terminal(sandbox: Sandbox, *, since: datetime | None = None) -> bool:
    """A terminal is open now, or was at any moment after `since` (the last look): someone was
    there during the interval being judged, however short their session."""
    sessions = TerminalSession.objects.filter(sandbox_id=sandbox.pk)
    were_there = Q(ended_at__isnull=True) | Q(ended_at__gte=since) if since else Q(ended_at__isnull=True)
    return sessions.filter(were_there).exists()


def _cpu_since_last_look(watch: IdleWatch, sandbox: Sandbox, raw: dict[str, Any]) -> tuple[float | None, dict]:
    """(CPU % since the last look, or None when it cannot be told; the figures to keep)."""
    previous = watch.sample if watch.container_id == sandbox.container_id and watch.sample else None
    found = figures(raw, previous, time.time() - previous["t"] if previous else 0.0)
    kept = {k: found[k] for k in KEPT}
    if previous is not None and found["_cpu_total"] < previous["_cpu_total"]:
        return None, kept  # the container was restarted: its counters began again
    return found["cpu"], kept


def idle_check(sandbox: Sandbox, policy: TeamPolicy, *, now: datetime, sample: Sampler, enqueue_stop: bool = True) -> bool:
    """Look at one running sandbox once; stop it if it has been idle long enough. True if a stop
    was requested."""
    watch, _ = IdleWatch.objects.get_or_create(sandbox=sandbox)
    try:
        raw = sample(sandbox)
    except engine.EngineError:
        return False  # Docker did not answer: no judgement this time
    if not raw.get("read") or not (raw.get("cpu_stats") or {}).get("system_cpu_usage"):
        return False  # it stopped meanwhile
    cpu, kept = _cpu_since_last_look(watch, sandbox, raw)
    threshold = float(policy.idle_cpu_percent or 0)
    quiet = cpu is not None and cpu < threshold and not _has_open_terminal(sandbox, since=watch.sampled_at)
    idle_since = (watch.idle_since or watch.sampled_at) if quiet else None
    IdleWatch.objects.filter(pk=watch.pk).update(container_id=sandbox.container_id, sample=kept, sampled_at=now, idle_since=idle_since)
    if idle_since is None or now - idle_since < timedelta(minutes=policy.idle_minutes or 0):
        return False
    return _stop(sandbox, policy, cpu=cpu, idle_since=idle_since, now=now, enqueue_stop=enqueue_stop)


def _stop(sandbox: Sandbox, policy: TeamPolicy, *, cpu: float | None, idle_since: datetime, now: datetime, enqueue_stop: bool) -> bool:
    """Claim the sandbox for Stop only from `running` (never a paused one) and only while no
    terminal is open, judged again inside the transaction that claims it."""
    try:
        with transaction.atomic():
            if _has_open_terminal(sandbox):
                return False
            claim(sandbox=sandbox, action=Sandbox.Action.STOP, allowed_from={S.RUNNING})
            minutes = int((now - idle_since).total_seconds() // 60)
            details = {
                "from": S.RUNNING,
                "idle_minutes": minutes,
                "rule_minutes": policy.idle_minutes,
                "cpu_percent": cpu,
                "rule_cpu_percent": str(policy.idle_cpu_percent),
                "idle_since": idle_since.isoformat(),
            }
            audit(ACTOR, "sandbox.idle_stop", sandbox, details)
            IdleWatch.objects.filter(sandbox_id=sandbox.pk).delete()
            if enqueue_stop:
                enqueue(sandbox.pk, Sandbox.Action.STOP, S.RUNNING)
            live.sandbox_changed(sandbox)
    except SandboxError as exc:  # busy, held by an incident, or no longer running: the next look
        log.info("idle rule: %s not stopped now: %s", sandbox.name, exc)
        return False
    log.info("idle rule: stopping %s (CPU under %s %% for %s minutes)", sandbox.name, policy.idle_cpu_percent, policy.idle_minutes)
    return True


def idle_sweep(*, now: datetime | None = None, sample: Sampler | None = None, enqueue_stop: bool = True) -> list[int]:
    """Look once at every running sandbox of every team whose idle rule is on; return the ids
    of those whose stop was requested. Watches of sandboxes not looked at (stopped, paused,
    their team's rule off) go, so their idle time starts afresh when they run again."""
    now = now or timezone.now()
    sample = sample or _stats_once
    policies = {p.team_id: p for p in TeamPolicy.objects.filter(idle_minutes__isnull=False, idle_cpu_percent__isnull=False)}
    running = list(Sandbox.objects.filter(team_id__in=list(policies), status=S.RUNNING).exclude(container_id="").select_related("team"))
    IdleWatch.objects.exclude(sandbox_id__in=[s.pk for s in running]).delete()
    stopped = []
    for sandbox in running:
        try:
            if idle_check(sandbox, policies[sandbox.team_id], now=now, sample=sample, enqueue_stop=enqueue_stop):
                stopped.append(sandbox.pk)
        except engine.EngineUnavailable:
            raise
        except Exception:  # one sandbox's trouble does not keep the rule from the others
            log.exception("idle rule: looking at %s failed", sandbox.name)
    return stopped


def last_idle_stop(sandbox: Sandbox) -> dict[str, Any] | None:
    """If the idle rule stopped `sandbox` and nobody started it since: when, and why (for its
    page). Read from the audit trail, which is where the stop is recorded."""
    if sandbox.status != S.STOPPED:
        return None
    event = (
        AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid, action__in=["sandbox.idle_stop", "sandbox.start"])
        .order_by("-seq")
        .only("action", "created_at", "details")
        .first()
    )
    if event is None or event.action != "sandbox.idle_stop":
        return None
    details = event.details or {}
    return {
        "at": event.created_at,
        "minutes": details.get("idle_minutes"),
        "cpu_percent": f"{Decimal(str(details.get('rule_cpu_percent') or 0)).normalize():f}",
    }
