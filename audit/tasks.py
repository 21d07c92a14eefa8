"""Celery tasks of the audit trail."""

from celery import shared_task

from .services import audit_verify_and_record


@shared_task
def audit_verify_task() -> bool:
    """Daily (Celery beat): verify the chain; a broken one shows a banner to admins."""
    return audit_verify_and_record().ok
