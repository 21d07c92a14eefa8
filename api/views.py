"""The API's sandbox endpoints: thin, like the pages. Each reads with the dashboard's selectors
and writes through the services, and maps the services' errors to a status:

    InvalidInput     400, the fields' messages           PermissionDenied  403 (a role or the token's scope)
    PolicyViolation  400, {"detail", "problems"}         not visible       404, as for no such sandbox
    SandboxError     409, the sandbox's state refuses    NotQueued         503 for an action (nothing is
                                                                           under way); 202 with queued=false
                                                                           for a create (it is recorded)
"""

from contextlib import ExitStack
from typing import cast

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from audit.services import attributed
from controlpanel.http import client_ip
from sandboxes import policy, selectors, services
from sandboxes.forms import DestroyForm
from sandboxes.models import Sandbox
from teams.permissions import capped, request_roles, role_cap, teams_visible

from . import serializers as s
from .auth import SCOPE_ROLE
from .models import ApiToken
from .throttling import TokenRateThrottle

ERRORS = {
    401: OpenApiResponse(s.ErrorSerializer, description="No token, or one that is malformed, unknown, expired or revoked."),
    403: OpenApiResponse(s.ErrorSerializer, description="Your role in the team, or the token's scope, does not allow it."),
}
BODY = {
    413: OpenApiResponse(s.ErrorSerializer, description="The body is larger than the API takes."),
    415: OpenApiResponse(s.ErrorSerializer, description="The body is not application/json."),
}
NOT_FOUND = {404: OpenApiResponse(s.ErrorSerializer, description="No such sandbox, or not one you may see.")}
BAD = {400: OpenApiResponse(OpenApiTypes.OBJECT, description="What was sent is refused: each field with its messages.")}
PK = OpenApiParameter("pk", int, OpenApiParameter.PATH, description="The sandbox's id.")


class PanelAPIView(APIView):
    """Every API view: for the request's duration, the token's scope caps the user's roles
    (teams.permissions.role_cap, read by `authorize`) and every audit event names the token
    (audit.services.attributed). Each token's calls are rate-limited (api.throttling)."""

    throttle_classes = [TokenRateThrottle]

    def dispatch(self, request, *args, **kwargs):
        with ExitStack() as self._request_scope:
            return super().dispatch(request, *args, **kwargs)

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)  # authenticates, checks the permissions
        token = request.auth
        if isinstance(token, ApiToken):
            self._request_scope.enter_context(role_cap(SCOPE_ROLE[token.scope], f"token {token.prefix} (scope {token.scope})"))
            self._request_scope.enter_context(attributed({"via": "api", "token": token.prefix}))

    def actions_of(self, request: Request):
        roles = request_roles(request)
        return lambda sandbox: services.allowed_actions(sandbox, role=capped(roles.get(sandbox.team_id)))

    def row_actions_of(self, request: Request):
        """actions_of() for the list's rows (dicts of selectors.LIST_VALUES)."""
        roles = request_roles(request)
        return lambda row, *, unreachable: services.actions_allowed(
            status=row["status"],
            on_hold=row["on_hold"],
            pending_action=row["pending_action"],
            unreachable=unreachable,
            role=capped(roles.get(row["team_id"])),
        )

    def sandbox_or_404(self, request: Request, pk: int | str) -> Sandbox:
        """The sandbox, if the user may see it; 404 for any other id (a malformed one too), the
        same answer as for one of another team, so that the answer tells nobody it exists."""
        if isinstance(pk, str) and not (pk.isascii() and pk.isdigit() and len(pk) < 19):
            raise exceptions.NotFound("No such sandbox.")
        sandbox = selectors.sandbox_get_visible(user=request.user, pk=int(pk))
        if sandbox is None:
            raise exceptions.NotFound("No such sandbox.")
        return sandbox

    def detail(self, request: Request, sandbox: Sandbox) -> dict:
        return s.SandboxDetailSerializer(sandbox, context={"actions_of": self.actions_of(request)}).data


def _validated(serializer_class, data):
    if not isinstance(data, dict):
        raise exceptions.ValidationError({"non_field_errors": ["Expected a JSON object."]})
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer


class SandboxList(PanelAPIView):
    """The dashboard's list (superusers see every team's sandboxes, others their teams'), and the
    New sandbox form: both through the same selector and service as the pages."""

    @extend_schema(
        operation_id="sandboxes_list",
        parameters=[s.SandboxFilter],
        responses={200: s.SandboxPageSerializer, **BAD, **ERRORS},
        summary="The sandboxes you may see, a page at a time (the dashboard's list)",
    )
    def get(self, request: Request) -> Response:
        query = _validated(s.SandboxFilter, request.query_params.dict()).validated_data
        page = selectors.sandbox_page(
            user=request.user,
            roles=request_roles(request),
            search=query.get("q", "").strip(),
            page=query.get("page", 1),
            team_id=query.get("team"),
            status=query.get("status", ""),
            host=query.get("host", ""),
            values=True,
        )
        url = request.build_absolute_uri()
        body = {
            "count": page.count,
            "next": replace_query_param(url, "page", page.next_page_number()) if page.has_next() else None,
            "previous": replace_query_param(url, "page", page.previous_page_number()) if page.has_previous() else None,
            "results": s.sandbox_rows(cast(list[dict], page.object_list), actions_of=self.row_actions_of(request)),
        }
        return Response(body)

    @extend_schema(
        operation_id="sandboxes_create",
        request=s.SandboxCreateSerializer,
        responses={
            202: OpenApiResponse(s.AcceptedSerializer, description="Recorded; its start is under way (or, queued=false, not queued)."),
            400: OpenApiResponse(
                OpenApiTypes.OBJECT, description="Refused: each field with its messages, or the security policy's problems."
            ),
            **ERRORS,
            **BODY,
        },
        summary="Create a sandbox (as the New sandbox form)",
    )
    def post(self, request: Request) -> Response:
        data = _validated(s.SandboxCreateSerializer, request.data).defaults()
        # A team the user is not in is "no such team", as a sandbox of it is "no such sandbox".
        team = teams_visible(user=request.user).filter(pk=data["team"]).first()
        if team is None:
            raise exceptions.ValidationError({"team": ["No such team."]})
        mounts = [(m["host_path"], m["container_path"], m["read_only"]) for m in data.get("extra_mounts", [])]
        queued, reason = True, None
        try:
            sandbox = services.sandbox_create(
                actor=request.user,
                team=team,
                name=data["name"],
                image=data["image"],
                memory_mb=data["memory_mb"],
                cpus=data["cpus"],
                network_mode=data["network_mode"],
                extra_mounts=mounts,
                writable_root=data["writable_root"],
                low_ports_and_ping=data["low_ports_and_ping"],
                runtime=data["runtime"],
                selinux_level=data.get("selinux_level", "").strip(),
                egress_presets=data.get("egress_presets", []),
                egress_allow=data.get("egress_allow", ""),
                disk_mb=data.get("disk_mb"),
                host=data.get("host") or None,
                source_ip=client_ip(request),
            )
        except services.NotQueued as exc:
            queued, reason = False, exc.reason
            sandbox = Sandbox.objects.get(name=data["name"].strip(), team=team, status__in=[Sandbox.Status.ERROR, Sandbox.Status.CREATING])
        except services.InvalidInput as exc:
            raise exceptions.ValidationError({field or "non_field_errors": problems for field, problems in exc.errors.items()}) from exc
        except policy.PolicyViolation as exc:
            return Response({"detail": "Refused by the security policy.", "problems": exc.problems}, status=400)
        sandbox = self.sandbox_or_404(request, sandbox.pk)
        body = {"url": f"/api/v1/sandboxes/{sandbox.pk}/", "queued": queued, "sandbox": self.detail(request, sandbox)}
        if reason:
            body["reason"] = f"Recorded, but not started: {reason}. Start it when the queue is back."
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class SandboxDetail(PanelAPIView):
    """One sandbox, with the actions you may ask for now; 404 for one you may not see."""

    @extend_schema(
        operation_id="sandboxes_retrieve",
        parameters=[PK],
        responses={200: s.SandboxDetailSerializer, **ERRORS, **NOT_FOUND},
        summary="One sandbox",
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(self.detail(request, self.sandbox_or_404(request, pk)))


class SandboxAction(PanelAPIView):
    """A lifecycle action, refused exactly where the page refuses it (the service decides). The
    task carries it out: its state and result are read at `url`."""

    @extend_schema(
        operation_id="sandboxes_action",
        request=s.ActionSerializer,
        parameters=[PK, OpenApiParameter("action", str, OpenApiParameter.PATH, enum=Sandbox.Action.values)],
        responses={
            202: OpenApiResponse(s.AcceptedSerializer, description="Claimed and queued: its state and result are at `url`."),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Destroy without the sandbox's name in confirm_name, or a bad body."),
            409: OpenApiResponse(s.ErrorSerializer, description="Its state does not allow this action now (the page's message)."),
            503: OpenApiResponse(s.ErrorSerializer, description="The task queue refused the task: nothing is under way; retry later."),
            **ERRORS,
            **BODY,
            **NOT_FOUND,
        },
        summary="Ask for a lifecycle action (start, stop, restart, pause, unpause, reset, clean, destroy)",
    )
    def post(self, request: Request, pk: str, action: str) -> Response:
        sandbox = self.sandbox_or_404(request, pk)
        if action not in Sandbox.Action.values:
            raise exceptions.NotFound(f"No such action: one of {', '.join(Sandbox.Action.values)}.")
        body = _validated(s.ActionSerializer, request.data if request.data else {}).validated_data
        if action == Sandbox.Action.DESTROY:
            form = DestroyForm({"confirm_name": body.get("confirm_name", "")}, sandbox=sandbox)
            if not form.is_valid():
                raise exceptions.ValidationError({"confirm_name": [str(e) for e in form.errors["confirm_name"]]})
        try:
            services.sandbox_request_action(actor=request.user, sandbox=sandbox, action=action, source_ip=client_ip(request))
        except services.NotQueued as exc:
            return Response({"detail": str(exc)}, status=503, headers={"Retry-After": "30"})
        except services.SandboxError as exc:
            return Response({"detail": str(exc)}, status=409)
        sandbox.refresh_from_db()
        url = f"/api/v1/sandboxes/{sandbox.pk}/"
        return Response(
            {"url": url, "queued": True, "sandbox": self.detail(request, sandbox)},
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": url},
        )
