"""Celery tasks of the incidents app: ids in, one service call. Safe to redeliver."""

from celery import shared_task

from . import services


@shared_task
def incident_step_task(incident_id: int) -> None:
    services.incident_step_perform(incident_id=incident_id)


@shared_task
def incident_job_task(incident_id: int) -> None:
    """The steps that read or write the sandbox's data (snapshot: the evidence archive; reset:
    perhaps a restore), which can take as long as a backup: on its host's jobs queue, with the
    jobs' time limits (PANEL_JOB_TASKS), so that they never hold a lifecycle worker."""
    services.incident_step_perform(incident_id=incident_id)


@shared_task
def incident_group_snapshot_task(group: str, host_name: str | None = None) -> int:
    """A team-wide freeze: snapshot its sandboxes on `host_name` (the queue it came from: one
    task per host) one after another; all of them for a task queued before hosts had queues."""
    return services.snapshot_group(group, host_name=host_name)
