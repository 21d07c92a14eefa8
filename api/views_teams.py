"""Teams and members: the team pages' lists, and their admins' member changes, through
teams.services (which authorizes, keeps a last admin, and audits). A team you are not in is
404, as on the pages; a change you may not make is 403 before any user is looked up, so that
only the team's admins learn which user names exist (as on the page)."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlpanel.http import client_ip
from incidents import services as incidents
from sandboxes.services import SandboxError
from teams import agent_policy, policy, services
from teams.models import Membership, Team
from teams.permissions import Role, authorize, has_role, request_roles, teams_visible

from . import serializers_teams as t
from .common import BAD, conflict, field_errors, not_found, path_id, pk_or_404
from .views import BODY, ERRORS, PanelAPIView, _validated

TEAM_404 = not_found("No such team, or not one of yours.")
USER = OpenApiParameter("username", str, OpenApiParameter.PATH, description="The member's user name.")


def _row(team: Team, role: str) -> dict:
    return {
        "id": team.pk,
        "slug": team.slug,
        "name": team.name,
        "role": role,
        "require_second_factor": team.require_second_factor,
        "url": f"/api/v1/teams/{team.pk}/",
    }


class TeamsMixin(PanelAPIView):
    def team_or_404(self, request: Request, pk: str) -> tuple[Team, str]:
        """The team and the user's role there, if they are in it (superusers: every team)."""
        team = teams_visible(user=request.user).filter(pk=pk_or_404(pk, "team")).first()
        if team is None:
            raise exceptions.NotFound("No such team.")
        return team, request_roles(request)[team.pk]


class TeamList(TeamsMixin):
    @extend_schema(operation_id="teams_list", responses={200: t.TeamSerializer(many=True), **ERRORS}, summary="Your teams, with your role")
    def get(self, request: Request) -> Response:
        roles = request_roles(request)
        return Response([_row(team, roles[team.pk]) for team in teams_visible(user=request.user)])


class TeamDetail(TeamsMixin):
    @extend_schema(
        operation_id="teams_retrieve",
        parameters=[path_id("pk", "team")],
        responses={200: t.TeamDetailSerializer, **ERRORS, **TEAM_404},
        summary="A team and its members (the team page)",
    )
    def get(self, request: Request, pk: str) -> Response:
        team, role = self.team_or_404(request, pk)
        members = Membership.objects.filter(team=team).select_related("user").order_by("user__username")
        return Response({**_row(team, role), "members": t.MemberSerializer(members, many=True).data})


class TeamMember(TeamsMixin):
    """Add a member or change their role (PUT), remove them (DELETE): the team page's Members form."""

    def _member(self, request: Request, pk: str, username: str):
        team, _role = self.team_or_404(request, pk)
        authorize(request.user, team, Role.ADMIN)  # before the look-up, as the page: 403 tells no names
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise exceptions.NotFound(f"No active user named {username[:150]!r}.")
        return team, user

    @extend_schema(
        operation_id="teams_member_set",
        parameters=[path_id("pk", "team"), USER],
        request=t.MemberSetSerializer,
        responses={
            200: t.MemberSerializer,
            **ERRORS,
            **BODY,
            **not_found("No such team (or not yours), or no active user of that name."),
            **conflict("The last admin of the team cannot be made anything else."),
            400: OpenApiResponse(description="An unknown role, or a bad body."),
        },
        summary="Add a member with a role, or change a member's role (team admins)",
    )
    def put(self, request: Request, pk: str, username: str) -> Response:
        team, user = self._member(request, pk, username)
        role = _validated(t.MemberSetSerializer, request.data).validated_data["role"]
        try:
            membership = services.membership_set(actor=request.user, team=team, user=user, role=role, source_ip=client_ip(request))
        except services.TeamError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(t.MemberSerializer(membership).data)

    @extend_schema(
        operation_id="teams_member_remove",
        parameters=[path_id("pk", "team"), USER],
        responses={
            204: None,
            **ERRORS,
            **not_found("No such team (or not yours), or no active user of that name."),
            **conflict("The last admin of the team cannot be removed."),
        },
        summary="Remove a member (team admins); removing one who is not a member changes nothing",
    )
    def delete(self, request: Request, pk: str, username: str) -> Response:
        team, user = self._member(request, pk, username)
        try:
            services.membership_remove(actor=request.user, team=team, user=user, source_ip=client_ip(request))
        except services.TeamError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TeamSecondFactor(TeamsMixin):
    """The team page's "Require a second factor" (team admins; teams.services)."""

    @extend_schema(
        operation_id="teams_second_factor_set",
        parameters=[path_id("pk", "team")],
        request=t.SecondFactorSetSerializer,
        responses={200: t.TeamSerializer, **BAD, **ERRORS, **BODY, **TEAM_404},
        summary="Require (or stop requiring) a second factor of every member (team admins)",
        description="Once required, a member without a confirmed second factor is refused, by the pages and by their tokens "
        "alike, until they set one up on the panel: yours too.",
    )
    def put(self, request: Request, pk: str) -> Response:
        team, role = self.team_or_404(request, pk)
        required = _validated(t.SecondFactorSetSerializer, request.data).validated_data["required"]
        services.second_factor_require(actor=request.user, team=team, required=required, source_ip=client_ip(request))
        return Response(_row(team, role))


class TeamFreeze(TeamsMixin):
    """The Incidents page's Freeze a team: an incident declared on each of its live sandboxes."""

    @extend_schema(
        operation_id="teams_freeze",
        parameters=[path_id("pk", "team")],
        request=t.FreezeSerializer,
        responses={
            202: OpenApiResponse(t.FrozenSerializer, description="Declared: each sandbox held and pausing, its snapshot queued."),
            **BAD,
            **ERRORS,
            **BODY,
            **not_found("No such team, or not one where you are an admin (as the page answers)."),
            **conflict("Refused now (the page's message)."),
        },
        summary="Freeze a team (team admins): an incident on every live sandbox, each paused at once, then snapshotted",
        description="To unfreeze, close each incident (POST /api/v1/incidents/{pk}/close/) or take its steps, as on the page.",
    )
    def post(self, request: Request, pk: str) -> Response:
        team, _role = self.team_or_404(request, pk)
        if not has_role(user=request.user, team=team, role=Role.ADMIN):  # as the page: not an admin's team is no team
            raise exceptions.NotFound("No such team.")
        data = _validated(t.FreezeSerializer, request.data).validated_data
        try:
            made, skipped = incidents.freeze_team(
                actor=request.user, team=team, severity=data["severity"], summary=data["summary"], source_ip=client_ip(request)
            )
        except SandboxError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(t.FrozenSerializer({"incidents": made, "skipped": skipped}).data, status=status.HTTP_202_ACCEPTED)


def _policy(team: Team) -> dict:
    found = policy.summary(team)
    row = found["policy"]
    limits = {name: (getattr(row, name) if row is not None else None) for name in policy.FIELDS}
    return t.PolicySerializer({**limits, "usage": found["usage"], "over": found["over"]}).data  # type: ignore[return-value]


class TeamResourcePolicy(TeamsMixin):
    """A team's resource policy: read by its members (as on the team page), set by superusers."""

    @extend_schema(
        operation_id="teams_policy_retrieve",
        parameters=[path_id("pk", "team")],
        responses={200: t.PolicySerializer, **ERRORS, **TEAM_404},
        summary="The team's resource policy and what it uses",
    )
    def get(self, request: Request, pk: str) -> Response:
        team, _role = self.team_or_404(request, pk)
        return Response(_policy(team))

    @extend_schema(
        operation_id="teams_policy_set",
        parameters=[path_id("pk", "team")],
        request=t.PolicySetSerializer,
        responses={200: t.PolicySerializer, **BAD, **ERRORS, **BODY, **TEAM_404},
        summary="Set the team's resource policy (superusers; every limit left out or null is none)",
    )
    def put(self, request: Request, pk: str) -> Response:
        team, _role = self.team_or_404(request, pk)
        values = _validated(t.PolicySetSerializer, request.data).validated_data
        try:
            policy.policy_set(actor=request.user, team=team, values=dict(values), source_ip=client_ip(request))
        except ValidationError as exc:
            found = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
            raise field_errors({("" if k == "__all__" else k): list(v) for k, v in found.items()}) from exc
        return Response(_policy(team))


def _agent_policy(team: Team) -> dict:
    found = agent_policy.policy_of(team)
    settings = dict(found.managed_settings) if found is not None else {}
    return {
        "managed_settings": settings,
        "digest": agent_policy.digest(settings) if settings else "",
        "record_prompts": bool(found and found.record_prompts),
        "updated_at": found.updated_at if found is not None else None,
        "updated_by": found.updated_by.get_username() if found is not None and found.updated_by else None,
    }


class TeamAgentPolicy(TeamsMixin):
    """A team's policy for Claude Code: read by its members (as on the team page), set by its admins."""

    @extend_schema(
        operation_id="teams_agent_policy_retrieve",
        parameters=[path_id("pk", "team")],
        responses={200: t.AgentPolicySerializer, **ERRORS, **TEAM_404},
        summary="The team's policy for Claude Code (its managed settings)",
    )
    def get(self, request: Request, pk: str) -> Response:
        team, _role = self.team_or_404(request, pk)
        return Response(t.AgentPolicySerializer(_agent_policy(team)).data)

    @extend_schema(
        operation_id="teams_agent_policy_set",
        parameters=[path_id("pk", "team")],
        request=t.AgentPolicySetSerializer,
        responses={200: t.AgentPolicySerializer, **BAD, **ERRORS, **BODY, **TEAM_404},
        summary="Set the team's policy for Claude Code (team admins); each sandbox takes it at its next start",
    )
    def put(self, request: Request, pk: str) -> Response:
        team, _role = self.team_or_404(request, pk)
        authorize(request.user, team, Role.ADMIN)
        data = _validated(t.AgentPolicySetSerializer, request.data).validated_data
        if errors := agent_policy.settings_errors(data["managed_settings"]):
            raise field_errors({"managed_settings": errors})
        agent_policy.agent_policy_set(
            actor=request.user,
            team=team,
            managed_settings=data["managed_settings"],
            record_prompts=data["record_prompts"],
            source_ip=client_ip(request),
        )
        return Response(t.AgentPolicySerializer(_agent_policy(team)).data)


class TeamAllowlist(TeamsMixin):
    """The team's allowlist (sandboxes.services.team_set_allowlist): read by its members, set by its admins."""

    @extend_schema(
        operation_id="teams_allowlist_retrieve",
        parameters=[path_id("pk", "team")],
        responses={200: t.TeamAllowlistSerializer, **ERRORS, **TEAM_404},
        summary="The team's allowlist: entries in force for every allowlist-mode sandbox of the team",
    )
    def get(self, request: Request, pk: str) -> Response:
        team, _role = self.team_or_404(request, pk)
        return Response({"egress_allow": team.egress_allow})

    @extend_schema(
        operation_id="teams_allowlist_set",
        parameters=[path_id("pk", "team")],
        request=t.TeamAllowlistSerializer,
        responses={
            200: t.TeamAllowlistSerializer,
            **BAD,
            **ERRORS,
            **BODY,
            **TEAM_404,
            **conflict("Saved, but the grants could not be brought in line."),
        },
        summary="Set the team's allowlist (team admins); in force within a second",
    )
    def put(self, request: Request, pk: str) -> Response:
        from sandboxes import services as sandbox_services

        team, _role = self.team_or_404(request, pk)
        allow = _validated(t.TeamAllowlistSerializer, request.data).validated_data["egress_allow"]
        try:
            sandbox_services.team_set_allowlist(actor=request.user, team=team, allow=allow, source_ip=client_ip(request))
        except sandbox_services.InvalidInput as exc:
            raise field_errors(exc.errors) from exc
        except SandboxError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response({"egress_allow": team.egress_allow})
