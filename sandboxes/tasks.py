"""Celery tasks: ids in, re-fetch, call one service. Safe to redeliver (see services)."""

import logging

from celery import shared_task
from django.conf import settings

from hosts.services import local_host as default_host
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


@shared_task
def reconcile_all_task() -> int:
    """Periodic: re-queue actions whose worker is gone, put the egress rules back if they were
    changed (sandboxes.network), close terminal sessions whose server was killed, then a full
    resync with Docker for events missed while nothing was watching, and remove containers of
    destroyed sandboxes. (The events watcher resyncs too, but never queues: it must keep
    running while Redis is down.)"""
    services.requeue_stale_actions()
    for repair in claims.REPAIRERS:
        repair()
    try:
        services.egress_repair()
        services.grants_repair()
        terminals.close_orphan_terminals()
        changed = services.reconcile_all()
        services.remove_orphans()
        try:
            warm.tidy()
        except engine.EngineUnavailable:
            raise
        except (engine.EngineError, workspace.WorkspaceError, PoolError, OSError) as exc:  # the next resync tries again
            log.warning("the warm pool could not be tidied: %s", exc)
        if settings.WARM_POOL:
            warm_fill_task.delay(default_host().name)
        return changed
    except engine.EngineUnavailable:
        return 0


@shared_task
def checklist_refresh_task() -> int:
    """Periodic: every sandbox's automatic checklist, for the dashboard's badges."""
    from . import checklist

    try:
        return checklist.refresh_all()
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
