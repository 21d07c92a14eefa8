"""Celery tasks of the incidents app: ids in, one service call. Safe to redeliver."""

from celery import shared_task

from . import services


@shared_task
def incident_step_task(incident_id: int) -> None:
    services.incident_step_perform(incident_id=incident_id)


@shared_task
def incident_group_snapshot_task(group: str) -> int:
    """A team-wide freeze: snapshot its sandboxes one after another."""
    return services.snapshot_group(group)
