"""The team pages: who is in a team, and (for its admins) adding, changing and removing members."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from . import services
from .models import Membership, Team
from .permissions import Role, team_roles, teams_visible, user_role


def _client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def team_list(request: HttpRequest) -> HttpResponse:
    roles = team_roles(user=request.user)
    teams = [(team, roles.get(team.pk, "")) for team in teams_visible(user=request.user)]
    return render(request, "teams/list.html", {"teams": teams})


def _get_team(request: HttpRequest, slug: str) -> tuple[Team, str]:
    team = get_object_or_404(Team, slug=slug)
    role = user_role(user=request.user, team=team)
    if role is None:
        raise Http404("No such team.")
    return team, role


def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    team, role = _get_team(request, slug)
    members = Membership.objects.filter(team=team).select_related("user").order_by("user__username")
    return render(
        request,
        "teams/detail.html",
        {"team": team, "role": role, "members": members, "roles": Role.choices, "is_admin": role == Role.ADMIN},
    )


@require_POST
def team_member(request: HttpRequest, slug: str) -> HttpResponse:
    """Add a member, change a role, or remove a member (team admins)."""
    team, role = _get_team(request, slug)
    if role != Role.ADMIN:
        raise PermissionDenied("Only the team's admins manage its members.")
    username = request.POST.get("username", "").strip()
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        messages.error(request, f"No active user named {username!r}.")
        return redirect("team_detail", slug=slug)
    try:
        if request.POST.get("remove"):
            services.membership_remove(actor=request.user, team=team, user=user, source_ip=_client_ip(request))
            messages.info(request, f"{username} removed from {team}.")
        else:
            new_role = request.POST.get("role", "")
            services.membership_set(actor=request.user, team=team, user=user, role=new_role, source_ip=_client_ip(request))
            messages.info(request, f"{username} is now {new_role} in {team}.")
    except services.TeamError as exc:
        messages.error(request, str(exc))
    return redirect("team_detail", slug=slug)


@require_POST
def team_second_factor(request: HttpRequest, slug: str) -> HttpResponse:
    """Require (or stop requiring) a second factor of every member (team admins), audited."""
    team, role = _get_team(request, slug)
    if role != Role.ADMIN:
        raise PermissionDenied("Only the team's admins decide this.")
    required = request.POST.get("require") == "1"
    if Team.objects.filter(pk=team.pk).exclude(require_second_factor=required).update(require_second_factor=required):
        services.audit_team(
            request.user, "team.second_factor_required" if required else "team.second_factor_optional", team, source_ip=_client_ip(request)
        )
        messages.info(request, f"{team}: a second factor is now {'required' if required else 'optional'} for every member.")
    return redirect("team_detail", slug=slug)
