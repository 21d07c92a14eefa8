"""Reading the audit trail, limited to what the user may see."""

from django.db.models import Q, QuerySet

from sandboxes.selectors import sandbox_list_visible

from .models import AuditEvent


def audit_events_visible(*, user) -> QuerySet[AuditEvent]:
    """Superusers see everything; others see their own actions and events on their sandboxes."""
    events = AuditEvent.objects.all()
    if user.is_superuser:
        return events
    names = sandbox_list_visible(user=user, include_destroyed=True).values_list("name", flat=True)
    return events.filter(Q(actor=user) | Q(target__in=list(names)))
