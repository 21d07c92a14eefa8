"""Reads of the backups app, each limited to what the user may see."""

from django.db.models import QuerySet

from sandboxes.models import Sandbox
from teams.permissions import team_ids_visible

from .models import Backup, Restore


def backups_visible(*, user) -> QuerySet[Backup]:
    found = Backup.objects.select_related("sandbox", "team")
    if not getattr(user, "is_superuser", False):
        found = found.filter(team_id__in=team_ids_visible(user=user))
    return found


def backup_get_visible(*, user, pk: int) -> Backup | None:
    return backups_visible(user=user).filter(pk=pk).first()


def backups_of(sandbox: Sandbox) -> QuerySet[Backup]:
    return Backup.objects.filter(sandbox=sandbox).select_related("team")


def restores_of(sandbox: Sandbox) -> QuerySet[Restore]:
    return Restore.objects.filter(sandbox=sandbox)


def any_running(sandbox: Sandbox) -> bool:
    return backups_of(sandbox).filter(status=Backup.Status.RUNNING).exists() or restores_of(sandbox).filter(status="running").exists()
