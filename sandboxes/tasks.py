"""Celery tasks: ids in, re-fetch, call one service. Safe to redeliver (see services).

Where each goes is hosts.queues's router: a sandbox's action to its host's queue. The periodic
work is split in two: the beat's task (on the panel's machine, the default queue) does what only
touches the database and sends one task per enabled host to that host's queue, which does what
needs the host's engine or kernel, for that host's sandboxes only."""

import logging

from celery import shared_task
from django.conf import settings

from hosts.queues import serves
from hosts.selectors import enabled_host_names
from storage.pool import PoolError

from . import engine, services, workspace
from .services import claims, terminals, warm

log = logging.getLogger(__name__)


@shared_task
def sandbox_action_task(sandbox_id: int, action: str) -> None:
    """Carry out a lifecycle action claimed by services.sandbox_request_action.

    No automatic retry: a failure (Docker down, say) ends in the `error` status with its
    reason, and the user retries the action when the cause is fixed. A run whose worker died is
    queued again by the periodic task below, a bounded number of times."""
    services.sandbox_perform(sandbox_id=sandbox_id, action=action)


def _each_host(task) -> int:
    """Send `task(host_name)` to every enabled host's queue; how many were sent."""
    names = enabled_host_names()
    for name in names:
        task.delay(name)
    return len(names)


@shared_task
def reconcile_all_task() -> int:
    """Periodic (the beat): re-queue actions whose worker is gone and the other apps' repairs of
    their long jobs, then one host_reconcile_task per enabled host. Returns the hosts sent to."""
    services.requeue_stale_actions()
    for repair in claims.REPAIRERS:
        repair()
    return _each_host(host_reconcile_task)


def _not_mine(host_name: str, what: str) -> bool:
    if serves(host_name):
        return False
    log.warning("%s for host %s refused: this worker serves %s", what, host_name, settings.PANEL_HOST)
    return True


@shared_task
def host_reconcile_task(host_name: str) -> int:
    """One host's share of the periodic resync, on its own queue: put this machine's egress rules
    and grants back if they were changed (its own host only: they are its kernel's), close
    terminal sessions whose server was killed, resync its sandboxes with its Docker for events
    missed while nothing was watching, and remove containers of its destroyed sandboxes. (The
    events watcher resyncs too, but never queues: it must keep running while Redis is down.)
    A host this worker does not serve is refused (hosts.queues.serves)."""
    if _not_mine(host_name, "the resync"):
        return 0
    try:
        if host_name == settings.PANEL_HOST:
            services.egress_repair()
            services.grants_repair()
            services.proxy_check()
        terminals.close_orphan_terminals(host_name=host_name)
        changed = services.reconcile_all(host_name=host_name)
        services.remove_orphans(host_name=host_name)
        _tidy_warm_pool(host_name)
        return changed
    except engine.EngineUnavailable:
        return 0


@shared_task
def terminal_end_task(host_name: str, exec_id: str, sandbox_id: int | None = None) -> None:
    """Hang up a terminal's shell on the host whose engine runs it (services.terminals.end_shell:
    the page's websocket closed on another machine). Only an exec of the container the panel
    recorded for that sandbox on this host is signalled (engine.end_terminal): an exec id from
    the queue never reaches another container of this machine's engine."""
    if _not_mine(host_name, "a terminal's hang-up"):
        return
    from .models import Sandbox

    sandbox = Sandbox.objects.filter(pk=sandbox_id or 0, host__name=host_name).exclude(container_id="").select_related("host").first()
    if sandbox is None:
        log.warning("a terminal's hang-up on host %s refused: no sandbox of it with a container (%s)", host_name, sandbox_id)
        return
    try:
        engine.engine_for_host(engine.host_of(sandbox.host)).end_terminal(exec_id, container_id=sandbox.container_id)
    except engine.EngineError:
        pass  # the sandbox or Docker is gone, and the shell with it


def _tidy_warm_pool(host_name: str) -> None:
    """The host's warm pool: what a dead worker left removed, then topped up (its own task)."""
    from hosts.models import Host

    host = Host.objects.filter(name=host_name).first()
    if host is None:
        return
    try:
        warm.tidy(host)
    except engine.EngineUnavailable:
        raise
    except (engine.EngineError, workspace.WorkspaceError, PoolError, OSError) as exc:  # the next resync tries again
        log.warning("the warm pool of %s could not be tidied: %s", host_name, exc)
    if settings.WARM_POOL:
        warm_fill_task.delay(host_name)


@shared_task
def checklist_refresh_task() -> int:
    """Periodic (the beat): one host_checklist_task per enabled host. Returns the hosts sent to."""
    return _each_host(host_checklist_task)


@shared_task
def host_checklist_task(host_name: str) -> int:
    """Every automatic checklist of one host's sandboxes, for the dashboard's badges, on its own
    queue (the checks read its engine and its disk)."""
    from . import checklist

    if _not_mine(host_name, "the checklist refresh"):
        return 0
    try:
        return checklist.refresh_all(host_name=host_name)
    except engine.EngineUnavailable:
        return 0


@shared_task
def warm_fill_task(host_name: str) -> int:
    """Top up the warm pools of the host `host_name` (after a create took a slot, and from the
    periodic resync). Safe to run twice at once (services.warm.fill)."""
    from hosts.models import Host

    host = Host.objects.filter(name=host_name).first()
    if host is None:
        return 0
    try:
        return warm.fill(host)
    except engine.EngineUnavailable:
        return 0


@shared_task
def move_task(move_id: int, step: str) -> None:
    """One step of a move to another host (services.moves), on the queue of the machine that
    does it (hosts.queues routes it by the step). Safe to redeliver: a step that is not the
    move's current one ends at once."""
    from .services.moves import move_perform

    move_perform(move_id=move_id, step=step)
