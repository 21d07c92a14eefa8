"""Celery tasks of the agents app: thin, they call one service."""

from celery import shared_task

from . import services


@shared_task
def agent_events_purge_task() -> int:
    """Periodic (Celery beat, hourly): delete the agent events older than AGENT_EVENTS_KEEP_DAYS.
    Safe to run twice: the second finds nothing to delete."""
    return services.purge_old_events()
