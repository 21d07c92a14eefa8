"""Secrets: a sandbox's own (operators change them) and a team's (its admins change them),
listed by name and metadata, set, rotated, enabled, disabled and deleted through
sandboxes.secrets (which authorizes, checks, seals and audits by name, never by value).

A value is never in an answer, an error (InvalidInput's messages never quote it; DRF's field
errors never echo a string) or the audit trail. Who may change is checked before the secret is
looked up, as on the pages (a viewer's change is 403 whatever the id)."""

from django.views.decorators.debug import sensitive_variables
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlpanel.http import client_ip
from sandboxes import secrets as svc
from sandboxes.models import Sandbox, Secret
from sandboxes.services.errors import InvalidInput
from teams.models import Team
from teams.permissions import Role, authorize

from . import serializers_secrets as z
from .common import BAD, invalid, not_found, path_id, pk_or_404
from .views import BODY, ERRORS, NOT_FOUND, _validated
from .views_teams import TEAM_404, TeamsMixin

SECRET_404 = not_found("No such secret here (or no such sandbox or team, or not one you may see).")
VAULT = {503: OpenApiResponse(description="The secrets key cannot be read: nothing was saved.")}


class SecretsBase(TeamsMixin):
    """The owner (a sandbox or a team) from the path, the role a change needs there, and the
    calls every secret endpoint makes."""

    def owner(self, request: Request, kwargs: dict) -> tuple[Sandbox | None, Team | None]:
        if "sandbox" in kwargs:
            return self.sandbox_or_404(request, kwargs["sandbox"]), None
        return None, self.team_or_404(request, kwargs["team"])[0]

    def may_change(self, request: Request, sandbox: Sandbox | None, team: Team | None) -> None:
        """The pages' rule, the services' own (authorize, under the token's scope): operators
        change a sandbox's secrets, admins a team's."""
        if sandbox is not None:
            authorize(request.user, sandbox.team, Role.OPERATOR)
        elif team is not None:
            authorize(request.user, team, Role.ADMIN)

    def secret_or_404(self, sandbox: Sandbox | None, team: Team | None, pk: str) -> Secret:
        secret = Secret.objects.filter(pk=pk_or_404(pk, "secret"), sandbox=sandbox, team=team).first()
        if secret is None:
            raise exceptions.NotFound("No such secret.")
        return secret

    @sensitive_variables("data")
    def save(self, request: Request, sandbox: Sandbox | None, team: Team | None) -> Response:
        self.may_change(request, sandbox, team)
        data = _validated(z.SecretSetSerializer, request.data).validated_data
        existed = Secret.objects.filter(sandbox=sandbox, team=team, name=data["name"].strip()).exists()
        try:
            secret = svc.secret_set(
                actor=request.user,
                sandbox=sandbox,
                team=team,
                name=data["name"],
                value=data["value"],
                delivery=data["delivery"],
                hosts=data["hosts"],
                header=data["header"],
                source_ip=client_ip(request),
            )
        except InvalidInput as exc:
            raise invalid(exc) from None
        except svc.VaultError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        body = {"secret": z.SecretSerializer(secret).data, "created": not existed}
        return Response(body, status=status.HTTP_200_OK if existed else status.HTTP_201_CREATED)

    @sensitive_variables("data")
    def change(self, request: Request, sandbox: Sandbox | None, team: Team | None, pk: str) -> Response:
        self.may_change(request, sandbox, team)
        secret = self.secret_or_404(sandbox, team, pk)
        data = _validated(z.SecretChangeSerializer, request.data).validated_data
        ip = client_ip(request)
        try:
            if "value" in data:
                secret = svc.secret_set(
                    actor=request.user,
                    sandbox=sandbox,
                    team=team,
                    name=secret.name,
                    value=data["value"],
                    delivery=data.get("delivery", secret.delivery),
                    hosts=data.get("hosts", secret.hosts),
                    header=data.get("header", secret.header),
                    source_ip=ip,
                )
            if "enabled" in data:
                svc.secret_enable(actor=request.user, secret=secret, enabled=data["enabled"], source_ip=ip)
        except InvalidInput as exc:
            raise invalid(exc) from None
        except svc.VaultError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        secret.refresh_from_db()
        return Response(z.SecretSerializer(secret).data)

    def remove(self, request: Request, sandbox: Sandbox | None, team: Team | None, pk: str) -> Response:
        self.may_change(request, sandbox, team)
        svc.secret_delete(actor=request.user, secret=self.secret_or_404(sandbox, team, pk), source_ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


SET_RESPONSES = {
    200: OpenApiResponse(z.SecretSetResult, description="Rotated: one of that name had another value."),
    201: OpenApiResponse(z.SecretSetResult, description="Made."),
    **BAD,
    **ERRORS,
    **BODY,
    **VAULT,
}
CHANGE_RESPONSES = {200: z.SecretSerializer, **BAD, **ERRORS, **BODY, **VAULT, **SECRET_404}
SANDBOX = path_id("sandbox", "sandbox")
TEAM = path_id("team", "team")
SECRET = path_id("pk", "secret")


class SandboxSecrets(SecretsBase):
    @extend_schema(
        operation_id="sandbox_secrets_list",
        parameters=[SANDBOX],
        responses={200: z.SandboxSecretsSerializer, **ERRORS, **NOT_FOUND},
        summary="A sandbox's secrets and its team's: names and metadata, never values",
    )
    def get(self, request: Request, sandbox: str) -> Response:
        box = self.sandbox_or_404(request, sandbox)
        return Response(
            {
                "secrets": z.SecretSerializer(Secret.objects.filter(sandbox=box), many=True).data,
                "team_secrets": z.SecretSerializer(Secret.objects.filter(team_id=box.team_id), many=True).data,
            }
        )

    @extend_schema(
        operation_id="sandbox_secrets_set",
        parameters=[SANDBOX],
        request=z.SecretSetSerializer,
        responses={**SET_RESPONSES, **NOT_FOUND},
        summary="Set a sandbox's secret, or rotate it (a new value for a name it has); operators",
    )
    def post(self, request: Request, sandbox: str) -> Response:
        return self.save(request, *self.owner(request, {"sandbox": sandbox}))


class SandboxSecret(SecretsBase):
    @extend_schema(
        operation_id="sandbox_secrets_change",
        parameters=[SANDBOX, SECRET],
        request=z.SecretChangeSerializer,
        responses=CHANGE_RESPONSES,
        summary="Disable, enable or rotate one of a sandbox's secrets; operators",
    )
    def patch(self, request: Request, sandbox: str, pk: str) -> Response:
        return self.change(request, *self.owner(request, {"sandbox": sandbox}), pk)

    @extend_schema(
        operation_id="sandbox_secrets_delete",
        parameters=[SANDBOX, SECRET],
        responses={204: None, **ERRORS, **SECRET_404},
        summary="Delete one of a sandbox's secrets; operators",
    )
    def delete(self, request: Request, sandbox: str, pk: str) -> Response:
        return self.remove(request, *self.owner(request, {"sandbox": sandbox}), pk)


class TeamSecrets(SecretsBase):
    @extend_schema(
        operation_id="team_secrets_list",
        parameters=[TEAM],
        responses={200: z.SecretSerializer(many=True), **ERRORS, **TEAM_404},
        summary="A team's secrets: names and metadata, never values",
    )
    def get(self, request: Request, team: str) -> Response:
        found = self.team_or_404(request, team)[0]
        return Response(z.SecretSerializer(Secret.objects.filter(team=found), many=True).data)

    @extend_schema(
        operation_id="team_secrets_set",
        parameters=[TEAM],
        request=z.SecretSetSerializer,
        responses={**SET_RESPONSES, **TEAM_404},
        summary="Set a team's secret, or rotate it; the team's admins",
    )
    def post(self, request: Request, team: str) -> Response:
        return self.save(request, *self.owner(request, {"team": team}))


class TeamSecret(SecretsBase):
    @extend_schema(
        operation_id="team_secrets_change",
        parameters=[TEAM, SECRET],
        request=z.SecretChangeSerializer,
        responses=CHANGE_RESPONSES,
        summary="Disable, enable or rotate one of a team's secrets; the team's admins",
    )
    def patch(self, request: Request, team: str, pk: str) -> Response:
        return self.change(request, *self.owner(request, {"team": team}), pk)

    @extend_schema(
        operation_id="team_secrets_delete",
        parameters=[TEAM, SECRET],
        responses={204: None, **ERRORS, **SECRET_404},
        summary="Delete one of a team's secrets; the team's admins",
    )
    def delete(self, request: Request, team: str, pk: str) -> Response:
        return self.remove(request, *self.owner(request, {"team": team}), pk)
