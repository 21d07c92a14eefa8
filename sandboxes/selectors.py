"""Reads, always limited to what the given user may see."""

from django.db.models import QuerySet

from .models import Sandbox


def sandbox_list_visible(*, user, include_destroyed: bool = False) -> QuerySet[Sandbox]:
    sandboxes = Sandbox.objects.select_related("team")
    if not include_destroyed:
        sandboxes = sandboxes.exclude(status=Sandbox.Status.DESTROYED)
    if getattr(user, "is_superuser", False):
        return sandboxes
    return sandboxes.filter(team__memberships__user=user).distinct()


def sandbox_get_visible(*, user, pk: int) -> Sandbox | None:
    return sandbox_list_visible(user=user).filter(pk=pk).first()
