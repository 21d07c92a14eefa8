"""Reading the audit trail, limited to what the user may see."""

from django.db.models import Q, QuerySet

from teams.permissions import team_ids_visible

from .models import AuditEvent, ChainCheck


def audit_events_visible(*, user) -> QuerySet[AuditEvent]:
    """Superusers see everything. Everyone else sees the events about their teams' sandboxes,
    and their own sign-ins and sign-outs."""
    events = AuditEvent.objects.all()
    if user.is_superuser:
        return events
    return events.filter(
        Q(sandbox_uuid__isnull=False, team_id__in=team_ids_visible(user=user)) | Q(actor_id=user.pk, action__startswith="auth.")
    )


def audit_chain_problem() -> str | None:
    """What the newest `audit verify` found wrong, or None if it found the chain intact."""
    latest = ChainCheck.objects.only("ok", "problem").first()
    return latest.problem if latest is not None and not latest.ok else None
