"""Writing (and checking) the audit trail. Callers write their event in the same transaction
as the change it records, so a change that rolls back leaves no event, and vice versa."""

from typing import Any

from django.db import transaction
from django.utils import timezone

from .models import AuditEvent


def audit_record(
    *,
    actor: Any,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
    source_ip: str | None = None,
    actor_name: str | None = None,
) -> AuditEvent:
    """Append one event, chained to the newest one. `actor` is a user or None (system)."""
    if actor_name is None:
        actor_name = actor.get_username() if actor is not None else "system"
    with transaction.atomic():
        # SQLite takes the write lock at BEGIN (transaction_mode IMMEDIATE); on PostgreSQL the
        # row lock on the newest event serialises appenders so the chain never forks.
        last = AuditEvent.objects.select_for_update().order_by("-id").only("hash").first()
        event = AuditEvent(
            actor=actor if getattr(actor, "pk", None) else None,
            actor_name=actor_name,
            action=action,
            target=target,
            details=details or {},
            source_ip=source_ip or None,
            created_at=timezone.now(),
            prev_hash=last.hash if last else "",
        )
        event.hash = event.compute_hash()
        event.save()
    return event


def audit_verify_chain() -> int | None:
    """Return the id of the first event whose hash or link does not hold, or None if intact."""
    prev = ""
    for event in AuditEvent.objects.order_by("id").iterator():
        if event.prev_hash != prev or event.compute_hash() != event.hash:
            return event.pk
        prev = event.hash
    return None
