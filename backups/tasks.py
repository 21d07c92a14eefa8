"""Celery tasks of the backups app: ids in, one service call. Safe to redeliver (see services)."""

from celery import shared_task

from . import services
from .models import Backup


@shared_task
def backup_task(backup_id: int) -> None:
    services.backup_perform(backup_id=backup_id)


@shared_task
def restore_task(restore_id: int) -> None:
    services.restore_perform(restore_id=restore_id)


@shared_task
def backup_verify_task(backup_id: int) -> None:
    backup = Backup.objects.filter(pk=backup_id).first()
    if backup is not None:
        services.backup_verify(backup=backup)


@shared_task
def backup_import_task(backup_id: int) -> None:
    services.backup_import_perform(backup_id=backup_id)


@shared_task
def backup_schedules_task() -> int:
    """Every minute: start the scheduled backups whose time has come."""
    return services.run_due_schedules()
