"""Reads of the incidents app, each limited to what the user may see (pages and API alike)."""

from django.db.models import QuerySet

from teams.permissions import team_ids_visible

from .models import Incident


def incidents_visible(*, user) -> QuerySet[Incident]:
    found = Incident.objects.select_related("sandbox", "team", "backup")
    if not getattr(user, "is_superuser", False):
        found = found.filter(team_id__in=team_ids_visible(user=user))
    return found


def incident_get_visible(*, user, pk: int) -> Incident | None:
    return incidents_visible(user=user).filter(pk=pk).first()


def report_context(incident: Incident) -> dict:
    """What the incident's report (Markdown or printable HTML) shows: its timeline and its
    evidence's members with their hashes."""
    return {"incident": incident, "events": incident.events.all(), "members": incident.evidence_members}
