"""Who may do what: a user's role in a team, ranked viewer < operator < admin. Superusers are
admins of every team. Services call `authorize`; pages and sockets read the roles to show
exactly what the services would allow."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

from .models import Membership, Team

Role = Membership.Role
ROLE_RANK: dict[str, int] = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


class SystemActor(str):
    """An actor that is not a web user (the CLI, the reconciler); authorised for everything."""


def actor_name(actor) -> str:
    if actor is None:
        return "system"
    return str(actor) if isinstance(actor, SystemActor) else actor.get_username()


def actor_user(actor):
    """The user to record as the actor, or None for a SystemActor."""
    return None if isinstance(actor, SystemActor) else actor


def team_roles(*, user) -> dict[int, str]:
    """{team id: the user's role there}."""
    if getattr(user, "is_superuser", False):
        return {pk: Role.ADMIN for pk in Team.objects.values_list("pk", flat=True)}
    return dict(Membership.objects.filter(user=user).values_list("team_id", "role"))


def request_memberships(request) -> list[tuple[int, str, bool]]:
    """The request's user's teams, read once per request: (team id, role, whether the team
    requires a second factor). The second-factor middleware reads them on every request, and the
    page's roles (request_roles) are the same rows."""
    if not hasattr(request, "_panel_memberships"):
        rows = []
        if request.user.is_authenticated:
            rows = list(Membership.objects.filter(user=request.user).values_list("team_id", "role", "team__require_second_factor"))
        request._panel_memberships = rows
    return request._panel_memberships


def request_roles(request) -> dict[int, str]:
    """team_roles() of the request's user, read once per request (pages and the context
    processor both need them), from the memberships the second-factor middleware read."""
    if not hasattr(request, "_panel_roles"):
        user = request.user
        if not user.is_authenticated:
            request._panel_roles = {}
        elif getattr(user, "is_superuser", False):
            request._panel_roles = team_roles(user=user)
        else:
            request._panel_roles = {team_id: role for team_id, role, _required in request_memberships(request)}
    return request._panel_roles


def user_role(*, user, team: Team) -> str | None:
    """The user's role in `team` ("admin" for superusers), or None for no access."""
    if getattr(user, "is_superuser", False):
        return Role.ADMIN
    membership = Membership.objects.filter(user=user, team=team).only("role").first()
    return membership.role if membership else None


def role_allows(role: str | None, needed: str) -> bool:
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[needed]


# The most a request may use of its user's roles: an API token's scope (api.auth) sets it for the
# request; unset (pages, the CLI, tasks), the roles count in full. Read by `authorize`, so every
# service narrows the same way without knowing where the call came from.
_role_cap: ContextVar[tuple[str, str] | None] = ContextVar("role_cap", default=None)


@contextmanager
def role_cap(role: str, why: str) -> Iterator[None]:
    """Within the block, no role counts for more than `role`; `why` says so in a refusal."""
    reset = _role_cap.set((role, why))
    try:
        yield
    finally:
        _role_cap.reset(reset)


def capped(role: str | None) -> str | None:
    """`role` as the current request may use it (see role_cap)."""
    cap = _role_cap.get()
    if role is None or cap is None or ROLE_RANK[role] <= ROLE_RANK[cap[0]]:
        return role
    return cap[0]


def has_role(*, user, team: Team, role: str) -> bool:
    return role_allows(user_role(user=user, team=team), role)


def authorize(actor, team: Team, role: str) -> None:
    """Raise PermissionDenied unless `actor` has at least `role` in `team`."""
    if isinstance(actor, SystemActor):
        return
    if not has_role(user=actor, team=team, role=role):
        raise PermissionDenied(f"You need the {role} role in team {team} for this.")
    authorize_cap(role)


def authorize_cap(role: str) -> None:
    """Raise PermissionDenied if the request's cap (an API token's scope, role_cap) allows less
    than `role`: for rules that are not a team's role (a superuser's, say), narrowed the same way."""
    cap = _role_cap.get()
    if cap is not None and not role_allows(cap[0], role):
        raise PermissionDenied(f"This needs the {role} role, and {cap[1]} allows at most {cap[0]}.")


def teams_visible(*, user) -> QuerySet[Team]:
    if getattr(user, "is_superuser", False):
        return Team.objects.order_by("name")
    return Team.objects.filter(memberships__user=user).order_by("name")


def teams_for_operator(*, user) -> QuerySet[Team]:
    """The teams in which `user` may create sandboxes."""
    if getattr(user, "is_superuser", False):
        return Team.objects.order_by("name")
    return Team.objects.filter(memberships__user=user, memberships__role__in=[Role.OPERATOR, Role.ADMIN]).order_by("name")


def team_ids_visible(*, user) -> set[int]:
    return set(team_roles(user=user))
