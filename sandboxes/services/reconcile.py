"""Keeping the panel's view true when Docker changes behind its back: events (synced, and the
ones that matter written to the audit trail), the periodic resync, and containers left by
destroyed sandboxes."""

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from audit.services import audit_record
from teams.permissions import SystemActor

from .. import engine, live, network
from ..models import Sandbox
from .auditing import audit

S = Sandbox.Status
log = logging.getLogger(__name__)
# OOM kills less than this apart are one streak, counted together; the pages show a streak whose
# last kill is more recent than this.
OOM_RECENT = timedelta(minutes=10)


def observed_status(sandbox: Sandbox, state: engine.ContainerState | None) -> tuple[str, str] | None:
    """The (status, detail) Docker's view implies, or None when the row is already right."""
    if state is None:
        return S.STOPPED, (
            "The container was removed outside the panel. Files and the home volume are kept; Start creates a new container."
        )
    if state.status == "running" and sandbox.status != S.RUNNING:
        return S.RUNNING, ""
    if state.status == "paused" and sandbox.status != S.PAUSED:
        return S.PAUSED, ""
    if state.status in ("exited", "dead", "created") and sandbox.status in (S.RUNNING, S.PAUSED):
        if state.oom_killed:
            return S.ERROR, f"Killed: out of memory (limit {sandbox.memory_mb} MB)."
        if state.exit_code:
            return S.ERROR, f"The container exited with code {state.exit_code}."
        return S.STOPPED, "The container exited."
    return None


# What keeps a held sandbox as its hold has it (the incidents app registers it in its AppConfig.ready):
# called with a container found more alive than its row says; True when it dealt with it.
HOLD_KEEPERS: list[Callable[..., bool]] = []


def register_hold_keeper(keep: Callable[..., bool]) -> None:
    if keep not in HOLD_KEEPERS:
        HOLD_KEEPERS.append(keep)


def sandbox_sync(*, sandbox: Sandbox) -> bool:
    """Bring an idle sandbox's status in line with its container, and any sandbox's health;
    True if its status changed."""
    if not sandbox.container_id or sandbox.status in (S.DESTROYED, S.DESTROYING):
        return False
    state = engine.engine_for(sandbox).container_state(sandbox.container_id)
    _note_health(sandbox, state)
    if sandbox.pending_action:
        return False
    observed = observed_status(sandbox, state)
    if observed is None:
        return False
    status, detail = observed
    if sandbox.on_hold and status in (S.RUNNING, S.PAUSED) and any(keep(sandbox=sandbox, state=state) for keep in HOLD_KEEPERS):
        return False  # put back as the hold has it: the row stays as it was
    with transaction.atomic():
        changed = Sandbox.objects.filter(pk=sandbox.pk, pending_action="", status=sandbox.status, container_id=sandbox.container_id).update(
            status=status, status_detail=detail, container_id=sandbox.container_id if state else ""
        )
        if changed:
            audit(SystemActor("system"), "sandbox.state_changed", sandbox, {"from": sandbox.status, "to": status, "reason": detail})
            live.sandbox_changed(sandbox)
    return bool(changed)


def _note_health(sandbox: Sandbox, state: engine.ContainerState | None) -> None:
    """Record the container's health check state (Docker sends no event while it stays
    "starting", so it is read at every sync); "" for a container that is not up."""
    health = state.health if state is not None and state.status in ("running", "paused") else ""
    if health != sandbox.health and Sandbox.objects.filter(pk=sandbox.pk).exclude(health=health).update(health=health):
        sandbox.health = health
        live.sandbox_changed(sandbox)


def _count_oom(sandbox: Sandbox) -> None:
    """One more OOM kill in the sandbox: added to the current streak, or the first of a new one.
    One guarded UPDATE, so the watcher and a second one never lose a kill between them."""
    now = timezone.now()
    recent = Q(oom_last_at__gte=now - OOM_RECENT)
    Sandbox.objects.filter(pk=sandbox.pk).update(
        oom_kills=Case(When(recent, then=F("oom_kills") + 1), default=Value(1)),
        oom_since=Case(When(recent, then=F("oom_since")), default=Value(now)),
        oom_last_at=now,
    )
    live.sandbox_changed(sandbox)


def sandbox_sync_container(*, container_id: str) -> bool:
    sandbox = Sandbox.objects.filter(container_id=container_id).exclude(status=S.DESTROYED).first()
    return sandbox_sync(sandbox=sandbox) if sandbox else False


def on_host(rows, host_name: str | None):
    """`rows` (sandboxes) of the host named, or all of them for None."""
    return rows if host_name is None else rows.filter(host__name=host_name)


def reconcile_all(*, host_name: str | None = None) -> int:
    """Re-check every idle sandbox of `host_name` (None: of every host) against its Docker, for
    events missed while the panel was down. Returns how many sandboxes changed status."""
    changed = 0
    for sandbox in on_host(Sandbox.objects.exclude(status__in=[S.DESTROYED, S.DESTROYING]).filter(pending_action=""), host_name):
        changed += sandbox_sync(sandbox=sandbox)
    return changed


def remove_orphans(*, host_name: str | None = None) -> int:
    """Remove the containers of this instance on `host_name`'s engine (None: this machine's)
    that belong to one of its destroyed sandboxes (left by a run that Destroy interrupted, or by
    a Docker that was down). Containers whose UUID the panel does not know are left alone."""
    destroyed = {str(u) for u in on_host(Sandbox.objects.filter(status=S.DESTROYED), host_name).values_list("uuid", flat=True)}
    docker = engine.engine_for() if host_name is None else _engine_of(host_name)
    removed = 0
    for state in docker.instance_containers():
        if state.labels.get(engine.LABEL_UUID) in destroyed:
            docker.remove_container(state.id)
            removed += 1
    return removed


def _engine_of(host_name: str) -> engine.Engine:
    from hosts.models import Host

    return engine.engine_for_host(engine.host_of(Host.objects.get(name=host_name)))


# What Docker reports that belongs in the audit trail (the watcher writes these as they happen).
AUDITED_EVENTS = frozenset({"die", "oom", "kill", "destroy"})


def record_engine_event(*, event: dict) -> bool:
    """Write one of Docker's container events about a sandbox into the audit trail, as
    `container.<action>` by the actor `docker`. Helper containers are left out."""
    action = event.get("action", "")
    attributes = event.get("attributes") or {}
    sandbox_uuid = attributes.get(engine.LABEL_UUID)
    if action not in AUDITED_EVENTS or not sandbox_uuid or attributes.get(engine.LABEL_HELPER):
        return False
    sandbox = Sandbox.objects.filter(uuid=sandbox_uuid).first()
    if sandbox is None:
        return False
    details = {"container": str(event.get("id", ""))[:12], "name": attributes.get("name", "")}
    for key in ("exitCode", "signal"):
        if key in attributes:
            details[key] = attributes[key]
    audit(SystemActor("docker"), f"container.{action}", sandbox, details)
    if action == "oom":
        _count_oom(sandbox)
    return True


def egress_repair() -> list[str]:
    """Compare the host's egress rules with what they should be and put back any difference
    (audited as `egress.applied`, with what was found). Runs periodically and whenever the events
    watcher (re)connects, so after a dockerd restart the rules are back before anything starts a
    sandbox. If they cannot be applied, every sandbox on the network is stopped, with the reason.
    Returns what was wrong (empty when the rules were in place)."""
    if not network.enforced() or not engine.engine_for().host.is_local:
        return []
    bridge = network.internet_bridge().bridge
    try:
        wrong = network.problems()
        if not wrong:
            return []
        network.apply()
        left = network.problems()
        if left:
            raise network.EgressError("still wrong after applying them: " + "; ".join(left))
    except network.EgressError as exc:
        log.error("egress rules for %s cannot be applied: %s", bridge, exc)
        audit_record(actor=None, actor_name="egress", action="egress.failed", target=bridge, details={"error": str(exc)})
        stop_networked(f"Stopped: the egress rules could not be applied ({exc}).")
        return [str(exc)]
    audit_record(actor=None, actor_name="egress", action="egress.applied", target=bridge, details={"found": wrong})
    return wrong


def proxy_check() -> None:
    """Sandboxes pointed at the credential proxy talk to the panel's own only: if something else
    holds its port on a bridge (the proxy died and a squid took it), that bridge's sandboxes stop.
    The proxy merely not answering leaves them running: their HTTPS through it fails."""
    from ..network import proxy, proxy_ca

    if not network.enforced() or not engine.engine_for().host.is_local:
        return
    for bridge in network.bridges_table():
        why = proxy.probe(bridge.gateway) if proxy_ca.proxied(bridge.mode) else None
        if why and why.startswith(proxy.IMPOSTOR):
            log.error("sandboxes on %s stopped: %s", bridge.bridge, why)
            audit_record(actor=None, actor_name="egress", action="egress.proxy_impostor", target=bridge.bridge, details={"error": why})
            stop_networked(f"Stopped: {why}.", (bridge.network,))


def stop_networked(reason: str, networks: tuple[str, ...] | None = None) -> None:
    """Fail closed for running sandboxes too: without their rules nothing of this panel stays on
    the network, whatever the rows say (a start under way, a container started by hand)."""
    docker = engine.engine_for()
    ids = []
    for name in networks or network.networks():
        try:
            ids += docker.containers_on_network(name)
        except engine.NotFound:
            continue
        except engine.EngineError as exc:
            log.error("could not list the containers on %s: %s", name, exc)
    for container_id in ids:
        try:
            docker.stop(container_id, timeout=settings.SANDBOX_STOP_TIMEOUT)
        except engine.EngineError as exc:
            log.error("could not stop %s: %s", container_id[:12], exc)
    for sandbox in Sandbox.objects.filter(container_id__in=ids, status__in=[S.RUNNING, S.PAUSED]):
        with transaction.atomic():
            if Sandbox.objects.filter(pk=sandbox.pk, status=sandbox.status, pending_action="").update(status=S.ERROR, status_detail=reason):
                audit(SystemActor("egress"), "sandbox.state_changed", sandbox, {"from": sandbox.status, "to": S.ERROR, "reason": reason})
                live.sandbox_changed(sandbox)
