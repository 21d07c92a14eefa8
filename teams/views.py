"""The team pages: who is in a team, and (for its admins) adding, changing and removing members."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from controlpanel.http import client_ip

from . import agent_policy, policy, services
from .forms import TeamPolicyForm
from .models import Membership, Team
from .permissions import Role, team_roles, teams_visible, user_role


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


def _team_as_admin(request: HttpRequest, slug: str, refusal: str) -> Team:
    """The team, for one of its admins; PermissionDenied(`refusal`) for its other members."""
    team, role = _get_team(request, slug)
    if role != Role.ADMIN:
        raise PermissionDenied(refusal)
    return team


def team_detail(request: HttpRequest, slug: str, policy_form: TeamPolicyForm | None = None, agent_form: dict | None = None) -> HttpResponse:
    team, role = _get_team(request, slug)
    members = Membership.objects.filter(team=team).select_related("user").order_by("user__username")
    resources = policy.summary(team)
    if policy_form is None and request.user.is_superuser:
        policy_form = TeamPolicyForm(instance=resources["policy"], with_team=False)
    context = {
        "team": team,
        "role": role,
        "members": members,
        "roles": Role.choices,
        "is_admin": role == Role.ADMIN,
        "resources": resources,
        "policy_form": policy_form,
        "agent": agent_form or _agent_form(team),
    }
    failed = (policy_form is not None and policy_form.errors) or (agent_form or {}).get("errors")
    return render(request, "teams/detail.html", context, status=400 if failed else 200)


def _agent_form(team: Team) -> dict:
    """The agent policy card's values: the JSON as saved, the switch, who saved it when."""
    found = agent_policy.policy_of(team)
    settings = dict(found.managed_settings) if found is not None else {}
    text = agent_policy.canonical(settings).decode() if settings else ""
    return {"policy": found, "text": text, "record_prompts": bool(found and found.record_prompts), "errors": []}


@require_POST
def team_agent_policy(request: HttpRequest, slug: str) -> HttpResponse:
    """Set the team's policy for Claude Code (team admins; the service checks and audits)."""
    team = _team_as_admin(request, slug, "Only the team's admins set its policy for Claude Code.")
    text, record = request.POST.get("managed_settings", ""), request.POST.get("record_prompts") == "1"
    settings, errors = agent_policy.parse_settings(text)
    if not errors:
        try:
            agent_policy.agent_policy_set(
                actor=request.user, team=team, managed_settings=settings, record_prompts=record, source_ip=client_ip(request)
            )
        except services.TeamError as exc:
            errors = [str(exc)]
    if errors:
        return team_detail(request, slug, agent_form={"policy": None, "text": text, "record_prompts": record, "errors": errors})
    messages.info(request, f"{team}: the policy for Claude Code is saved; each sandbox takes it at its next start.")
    return redirect("team_detail", slug=slug)


@require_POST
def team_policy(request: HttpRequest, slug: str) -> HttpResponse:
    """Set the team's resource policy (superusers only, audited by the service)."""
    team, _role = _get_team(request, slug)
    if not request.user.is_superuser:
        raise PermissionDenied("Only a superuser sets a team's resource policy.")
    form = TeamPolicyForm(request.POST, instance=policy.TeamPolicy(team=team), with_team=False)
    if not form.is_valid():
        return team_detail(request, slug, policy_form=form)
    try:
        _saved, over = policy.policy_set(
            actor=request.user, team=team, values={f: form.cleaned_data.get(f) for f in policy.FIELDS}, source_ip=client_ip(request)
        )
    except ValidationError as exc:
        form.add_error(None, exc)
        return team_detail(request, slug, policy_form=form)
    messages.info(request, f"{team}: resource policy saved.")
    if over:
        messages.warning(
            request,
            f"{team} is already above it ({'; '.join(over)}): its sandboxes keep running, and new ones are refused until it is back under.",
        )
    return redirect("team_detail", slug=slug)


@require_POST
def team_member(request: HttpRequest, slug: str) -> HttpResponse:
    """Add a member, change a role, or remove a member (team admins)."""
    team = _team_as_admin(request, slug, "Only the team's admins manage its members.")
    username = request.POST.get("username", "").strip()
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        messages.error(request, f"No active user named {username!r}.")
        return redirect("team_detail", slug=slug)
    try:
        if request.POST.get("remove"):
            services.membership_remove(actor=request.user, team=team, user=user, source_ip=client_ip(request))
            messages.info(request, f"{username} removed from {team}.")
        else:
            new_role = request.POST.get("role", "")
            services.membership_set(actor=request.user, team=team, user=user, role=new_role, source_ip=client_ip(request))
            messages.info(request, f"{username} is now {new_role} in {team}.")
    except services.TeamError as exc:
        messages.error(request, str(exc))
    return redirect("team_detail", slug=slug)


@require_POST
def team_second_factor(request: HttpRequest, slug: str) -> HttpResponse:
    """Require (or stop requiring) a second factor of every member (team admins), audited."""
    team = _team_as_admin(request, slug, "Only the team's admins decide this.")
    required = request.POST.get("require") == "1"
    if services.second_factor_require(actor=request.user, team=team, required=required, source_ip=client_ip(request)):
        messages.info(request, f"{team}: a second factor is now {'required' if required else 'optional'} for every member.")
    return redirect("team_detail", slug=slug)
