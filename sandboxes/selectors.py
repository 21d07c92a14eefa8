"""Reads, always limited to what the given user may see."""

from django.db.models import QuerySet

from .models import Membership, Sandbox, Team

ROLE_RANK: dict[str, int] = {Membership.Role.VIEWER: 1, Membership.Role.OPERATOR: 2, Membership.Role.ADMIN: 3}


def sandbox_list_visible(*, user, include_destroyed: bool = False) -> QuerySet[Sandbox]:
    sandboxes = Sandbox.objects.select_related("team")
    if not include_destroyed:
        sandboxes = sandboxes.exclude(status=Sandbox.Status.DESTROYED)
    if getattr(user, "is_superuser", False):
        return sandboxes
    return sandboxes.filter(team__memberships__user=user).distinct()


def sandbox_get_visible(*, user, pk: int) -> Sandbox | None:
    return sandbox_list_visible(user=user).filter(pk=pk).first()


def user_role(*, user, team: Team) -> str | None:
    """The user's role in `team` ("admin" for superusers), or None for no access."""
    if getattr(user, "is_superuser", False):
        return Membership.Role.ADMIN
    membership = Membership.objects.filter(user=user, team=team).only("role").first()
    return membership.role if membership else None


def has_role(*, user, team: Team, role: str) -> bool:
    current = user_role(user=user, team=team)
    return current is not None and ROLE_RANK[current] >= ROLE_RANK[role]


def teams_for_operator(*, user) -> QuerySet[Team]:
    if getattr(user, "is_superuser", False):
        return Team.objects.order_by("name")
    return Team.objects.filter(
        memberships__user=user, memberships__role__in=[Membership.Role.OPERATOR, Membership.Role.ADMIN]
    ).order_by("name")


def team_ids_operable(*, user) -> set[int]:
    """Ids of the teams whose sandboxes `user` may act on (to show or hide action buttons)."""
    return set(teams_for_operator(user=user).values_list("pk", flat=True))
