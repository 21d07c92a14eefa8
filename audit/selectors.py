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


def shows_positions(user) -> bool:
    """Whether `user` is shown the events' places in the whole trail (sequence numbers, the
    chain's head): only who sees the whole trail; a member's gaps between numbers would count
    the other teams' events. The audit page, its exports and the API ask this."""
    return bool(getattr(user, "is_superuser", False))


def audit_chain_problem() -> str | None:
    """What the newest `audit verify` found wrong, or None if it found the chain intact."""
    latest = ChainCheck.objects.only("ok", "problem").first()
    return latest.problem if latest is not None and not latest.ok else None


def audit_events_filtered(*, user, params) -> tuple[QuerySet[AuditEvent], dict[str, str], list[str]]:
    """The visible events narrowed by the audit page's filters: actor, sandbox, team, action
    (a prefix, such as `backup.`), and a time range (dates or date-times, in the panel's time
    zone). Returns (events, the filters applied, problems with the filters)."""
    events = audit_events_visible(user=user)
    applied: dict[str, str] = {}
    problems: list[str] = []
    if actor := (params.get("actor") or "").strip()[:150]:
        events, applied["actor"] = events.filter(actor_name=actor), actor
    if sandbox := (params.get("sandbox") or "").strip()[:255]:
        events, applied["sandbox"] = events.filter(target=sandbox), sandbox
    if team := (params.get("team") or "").strip():
        if team.isascii() and team.isdecimal() and len(team) <= 12:
            events, applied["team"] = events.filter(team_id=int(team)), team
        else:
            problems.append("Team: choose one from the list.")
    if action := (params.get("action") or "").strip()[:64]:
        events, applied["action"] = events.filter(action__startswith=action), action
    for name, lookup in (("since", "created_at__gte"), ("until", "created_at__lte")):
        raw = (params.get(name) or "").strip()
        if not raw:
            continue
        moment = _parse_moment(raw, end_of_day=name == "until")
        if moment is None:
            problems.append(f"{name.capitalize()}: a date (YYYY-MM-DD) or a date and time (YYYY-MM-DDTHH:MM).")
            continue
        events, applied[name] = events.filter(**{lookup: moment}), moment.isoformat()
    return events, applied, problems


def _parse_moment(raw: str, *, end_of_day: bool):
    from datetime import UTC, datetime, time

    from django.utils import timezone

    try:
        if len(raw) == 10:
            day = datetime.strptime(raw, "%Y-%m-%d").date()
            moment = datetime.combine(day, time.max if end_of_day else time.min)
        else:
            moment = datetime.fromisoformat(raw[:40])
        moment = timezone.make_aware(moment) if timezone.is_naive(moment) else moment
        moment.astimezone(UTC)  # the database compares in UTC: a moment that cannot be one is refused here
    except (ValueError, OverflowError):
        return None
    return moment


def chain_head_current(head: dict | None) -> bool | None:
    """Whether an export's chain head (`seq`, `hash`) is an event of this database's trail
    (False: the file came from another panel, or the trail changed since); None for a file
    without one (a member's export, which has no positions)."""
    if not head or not head.get("seq"):
        return None
    return AuditEvent.objects.filter(seq=int(head["seq"]), hash=str(head.get("hash") or "")).exists()
