"""Celery tasks: ids in, re-fetch, call one service. Safe to redeliver (see services)."""

from celery import shared_task

from . import engine, services


@shared_task
def sandbox_action_task(sandbox_id: int, action: str) -> None:
    """Carry out a lifecycle action claimed by services.sandbox_request_action.

    No automatic retry: a failure (Docker down, say) ends in the `error` status with its
    reason, and the user retries the action when the cause is fixed."""
    services.sandbox_perform(sandbox_id=sandbox_id, action=action)


@shared_task
def reconcile_all_task() -> int:
    """Periodic: re-queue actions whose task was lost, then a full resync with Docker for events
    missed while nothing was watching. (The events watcher resyncs too, but never queues: it
    must keep running while Redis is down.)"""
    services.requeue_stale_actions()
    try:
        return services.reconcile_all()
    except engine.EngineUnavailable:
        return 0
