"""Celery tasks: ids in, re-fetch, call one service. Safe to redeliver (see services)."""

from celery import shared_task

from . import engine, services


@shared_task(
    autoretry_for=(engine.EngineUnavailable,), retry_backoff=2, max_retries=0,
)
def sandbox_action_task(sandbox_id: int, action: str) -> None:
    """Carry out a lifecycle action claimed by services.sandbox_request_action."""
    services.sandbox_perform(sandbox_id=sandbox_id, action=action)


@shared_task
def reconcile_all_task() -> int:
    """Periodic full resync with Docker, for events missed while nothing was watching."""
    try:
        return services.reconcile_all()
    except engine.EngineUnavailable:
        return 0
