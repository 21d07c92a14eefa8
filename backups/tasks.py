"""Celery tasks of the backups app: ids in, one service call. Safe to redeliver (see services)."""

from celery import shared_task

from . import services
from .services.attempts import backup_verify_perform


@shared_task
def backup_task(backup_id: int) -> None:
    services.backup_perform(backup_id=backup_id)


@shared_task
def restore_task(restore_id: int) -> None:
    services.restore_perform(restore_id=restore_id)


@shared_task
def backup_verify_task(backup_id: int) -> None:
    """Bounded like a restore: a worker that dies on every delivery does not get it forever."""
    backup_verify_perform(backup_id=backup_id)


@shared_task
def backup_import_task(backup_id: int) -> None:
    """Bounded like a restore (see services.attempts)."""
    services.backup_import_perform(backup_id=backup_id)


@shared_task
def backup_schedules_task() -> int:
    """Every minute: start the scheduled backups whose time has come."""
    return services.run_due_schedules()


@shared_task
def backup_stage_task(backup_id: int) -> None:
    """On the backup's host: copy its archive where the panel can stream it from (a download
    from the panel of a backup written on another machine; services.downloads)."""
    from .services.downloads import stage

    stage(backup_id=backup_id)
