"""The security checklist's writes: a team's manual items (made from the original list the
first time, then added, changed and removed by its admins) and a sandbox's ticks (by its
operators), each audited. The automatic checks are read in ../checklist.py."""

from django.db import transaction

from teams.permissions import Role, authorize

from ..models import ChecklistItem, ChecklistTick, Sandbox
from .auditing import audit
from .errors import InvalidInput

# The original `manage.sh` set-up's checklist: each team's manual items until its admins edit them.
ORIGINAL_ITEMS = [
    (ChecklistItem.Phase.BEFORE, "Workspace directory has correct permissions (755)"),
    (ChecklistItem.Phase.BEFORE, "No sensitive files in shared folders"),
    (ChecklistItem.Phase.BEFORE, "Git configured with container-specific identity"),
    (ChecklistItem.Phase.BEFORE, "Recent backup exists"),
    (ChecklistItem.Phase.DURING, "Only install trusted packages"),
    (ChecklistItem.Phase.DURING, "Review code before execution"),
    (ChecklistItem.Phase.DURING, "Keep sensitive data in appropriate folders"),
    (ChecklistItem.Phase.DURING, "Use imports/exports for controlled file transfer"),
    (ChecklistItem.Phase.AFTER, "Export important files"),
    (ChecklistItem.Phase.AFTER, "Commit and push code changes"),
    (ChecklistItem.Phase.AFTER, "Stop container when not in use"),
    (ChecklistItem.Phase.AFTER, "Backup if significant changes made"),
]


def team_items(team) -> list[ChecklistItem]:
    """The team's manual items, made from the original checklist the first time."""
    with transaction.atomic():
        if not ChecklistItem.objects.filter(team=team).exists():
            ChecklistItem.objects.bulk_create(
                ChecklistItem(team=team, phase=phase, text=text, position=n) for n, (phase, text) in enumerate(ORIGINAL_ITEMS)
            )
    return list(ChecklistItem.objects.filter(team=team))


MAX_ITEMS = 100


def item_save(*, actor, team, phase: str, text: str, item: ChecklistItem | None = None, source_ip: str | None = None) -> ChecklistItem:
    """Add a manual item to the team's list, or change one (team admins), audited. Ticks of a
    changed item stay: they were given to the item, whose meaning its admin keeps."""
    from teams.services import audit_team

    authorize(actor, team, Role.ADMIN)
    text = " ".join((text or "").split())
    errors = []
    if phase not in ChecklistItem.Phase.values:
        errors.append(f"Phase: one of {', '.join(ChecklistItem.Phase.values)}.")
    if not text or len(text) > 200:
        errors.append("Text: from 1 to 200 characters.")
    if item is not None and item.team_id != team.pk:
        errors.append("That item belongs to another team.")
    if item is None and len(team_items(team)) >= MAX_ITEMS:
        errors.append(f"At most {MAX_ITEMS} items a team.")
    if errors:
        raise InvalidInput({"text": errors})
    with transaction.atomic():
        if item is None:
            last = ChecklistItem.objects.filter(team=team).order_by("-position").values_list("position", flat=True).first()
            item = ChecklistItem.objects.create(team=team, phase=phase, text=text, position=(last or 0) + 1)
            audit_team(actor, "checklist.item_added", team, {"item": text, "phase": phase}, source_ip)
        else:
            before = {"item": item.text, "phase": item.phase}
            ChecklistItem.objects.filter(pk=item.pk).update(phase=phase, text=text)
            item.phase, item.text = phase, text
            audit_team(actor, "checklist.item_changed", team, {"from": before, "to": {"item": text, "phase": phase}}, source_ip)
    return item


def item_delete(*, actor, team, item: ChecklistItem, source_ip: str | None = None) -> None:
    """Remove a manual item and its ticks (team admins), audited."""
    from teams.services import audit_team

    authorize(actor, team, Role.ADMIN)
    if item.team_id != team.pk:
        raise InvalidInput({"text": ["That item belongs to another team."]})
    with transaction.atomic():
        ticks = ChecklistTick.objects.filter(item=item).count()
        item.delete()
        audit_team(actor, "checklist.item_removed", team, {"item": item.text, "phase": item.phase, "ticks": ticks}, source_ip)


def tick(*, actor, sandbox: Sandbox, item: ChecklistItem, ticked: bool, source_ip: str | None = None) -> None:
    """Tick or untick a manual item for a sandbox (operators), audited."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    if item.team_id != sandbox.team_id:
        raise ValueError("an item of another team")
    with transaction.atomic():
        if ticked:
            _, made = ChecklistTick.objects.get_or_create(
                sandbox=sandbox, item=item, defaults={"ticked_by": getattr(actor, "pk", None) and actor}
            )
        else:
            made = bool(ChecklistTick.objects.filter(sandbox=sandbox, item=item).delete()[0])
        if made:
            audit(
                actor, "checklist.ticked" if ticked else "checklist.unticked", sandbox, {"item": item.text, "phase": item.phase}, source_ip
            )
