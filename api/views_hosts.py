"""Hosts (superusers only, as the Hosts page: anyone else gets 404 for every host URL): their
health and load as the page shows them (hosts.selectors.host_rows), add, enable/disable,
drain, delete, and join tokens, through hosts.services and hosts.join (which check the
superuser, and an API token's admin scope, and audit)."""

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlpanel.http import client_ip
from hosts import join, selectors, services
from hosts.models import Host, JoinToken
from hosts.selectors import HostRow

from . import serializers_hosts as h
from .common import BAD, conflict, field_errors, not_found, path_id, pk_or_404
from .views import BODY, ERRORS, PanelAPIView, _validated

HOST_404 = not_found("No such host; every host URL answers 404 to anyone but a superuser.")
TOKEN_404 = not_found("No such join token; 404 to anyone but a superuser.")


def _health(row: HostRow) -> str:
    host = row.host
    if host.last_error:
        return "error"
    if host.last_heartbeat is None:
        return "never_seen"
    return "stale" if row.stale else "reachable"


def _host(row: HostRow) -> dict:
    host = row.host
    return {
        "id": host.pk,
        "name": host.name,
        "docker": row.base_url,
        "agent": host.agent,
        "enabled": host.enabled,
        "draining": host.draining,
        "health": _health(row),
        "last_error": host.last_error,
        "last_heartbeat": host.last_heartbeat,
        "engine_version": host.engine_version,
        "cpus": host.cpus,
        "memory_mb": host.memory_mb,
        "disk_mb": host.disk_mb,
        "load": vars(row.load),
        "pool_free_mb": row.pool_free_mb,
        "warm_ready": row.warm_ready,
        "warm_wanted": row.warm_wanted,
        "labels": host.labels,
        "deletable": row.deletable,
    }


def _token(token: JoinToken) -> dict:
    return {
        "id": token.pk,
        "name": token.name,
        "labels": token.labels,
        "state": token.state(timezone.now()),
        "created_by": token.created_by_name,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "host": token.host.name if token.host is not None else None,
    }


class HostsView(PanelAPIView):
    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        if not request.user.is_superuser:
            raise exceptions.NotFound("No such page.")

    def host_row(self, pk: str) -> HostRow:
        found = [row for row in selectors.host_rows() if row.host.pk == pk_or_404(pk, "host")]
        if not found:
            raise exceptions.NotFound("No such host.")
        return found[0]


class HostList(HostsView):
    @extend_schema(
        operation_id="hosts_list",
        responses={200: h.HostSerializer(many=True), **ERRORS, **HOST_404},
        summary="Every host with its health and load (superusers)",
    )
    def get(self, request: Request) -> Response:
        return Response(h.HostSerializer([_host(row) for row in selectors.host_rows()], many=True).data)

    @extend_schema(
        operation_id="hosts_create",
        request=h.HostCreateSerializer,
        responses={201: h.HostSerializer, **BAD, **ERRORS, **BODY, **HOST_404},
        summary="Add a host whose engine this machine reaches (superusers, admin scope)",
    )
    def post(self, request: Request) -> Response:
        data = _validated(h.HostCreateSerializer, request.data).validated_data
        try:
            host = services.host_create(actor=request.user, source_ip=client_ip(request), **data)
        except services.HostError as exc:
            raise field_errors(exc.errors) from None
        return Response(h.HostSerializer(_host(self.host_row(str(host.pk)))).data, status=status.HTTP_201_CREATED)


class HostDetail(HostsView):
    @extend_schema(
        operation_id="hosts_retrieve",
        parameters=[path_id("pk", "host")],
        responses={200: h.HostSerializer, **ERRORS, **HOST_404},
        summary="One host (superusers)",
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(h.HostSerializer(_host(self.host_row(pk))).data)

    @extend_schema(
        operation_id="hosts_state",
        parameters=[path_id("pk", "host")],
        request=h.HostStateSerializer,
        responses={200: h.HostSerializer, **BAD, **ERRORS, **BODY, **HOST_404},
        summary="Enable or disable a host, drain it or stop draining (superusers, admin scope)",
    )
    def patch(self, request: Request, pk: str) -> Response:
        host = self.host_row(pk).host
        values = _validated(h.HostStateSerializer, request.data).validated_data
        services.host_set_state(actor=request.user, host=host, source_ip=client_ip(request), **values)
        return Response(h.HostSerializer(_host(self.host_row(pk))).data)

    @extend_schema(
        operation_id="hosts_delete",
        parameters=[path_id("pk", "host")],
        responses={204: None, **ERRORS, **HOST_404, **conflict("It holds sandboxes or warm-pool slots.")},
        summary="Delete a host that holds no sandbox (superusers, admin scope)",
    )
    def delete(self, request: Request, pk: str) -> Response:
        host = Host.objects.filter(pk=pk_or_404(pk, "host")).first()
        if host is None:
            raise exceptions.NotFound("No such host.")
        try:
            services.host_delete(actor=request.user, host=host, source_ip=client_ip(request))
        except services.HostError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


class JoinTokenList(HostsView):
    @extend_schema(
        operation_id="hosts_join_tokens_list",
        responses={200: h.JoinTokenSerializer(many=True), **ERRORS, **TOKEN_404},
        summary="The newest join tokens with their state, never their secret (superusers)",
    )
    def get(self, request: Request) -> Response:
        return Response(h.JoinTokenSerializer([_token(row.token) for row in selectors.token_rows()], many=True).data)

    @extend_schema(
        operation_id="hosts_join_tokens_create",
        request=h.JoinTokenCreateSerializer,
        responses={
            201: OpenApiResponse(h.JoinTokenMadeSerializer, description="Made; `join_token` is shown this once (Cache-Control: no-store)."),
            400: OpenApiResponse(description="A bad or taken name, on SQLite, or while the agents' URLs are unset."),
            **ERRORS,
            **BODY,
            **TOKEN_404,
        },
        summary="A join token for a host on another machine (superusers, admin scope)",
    )
    def post(self, request: Request) -> Response:
        data = _validated(h.JoinTokenCreateSerializer, request.data).validated_data
        try:
            token, text = join.token_create(actor=request.user, name=data["name"], labels=data["labels"], source_ip=client_ip(request))
        except services.HostError as exc:
            raise field_errors(exc.errors) from None
        body = {"token": _token(token), "join_token": text}
        return Response(h.JoinTokenMadeSerializer(body).data, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})


class JoinTokenRevoke(HostsView):
    @extend_schema(
        operation_id="hosts_join_tokens_revoke",
        parameters=[path_id("pk", "join token")],
        request=None,
        responses={200: h.JoinTokenSerializer, **ERRORS, **BODY, **TOKEN_404},
        summary="Revoke a join token; a used one's host is disabled (superusers, admin scope)",
    )
    def post(self, request: Request, pk: str) -> Response:
        token = JoinToken.objects.filter(pk=pk_or_404(pk, "join token")).first()
        if token is None:
            raise exceptions.NotFound("No such join token.")
        token = join.token_revoke(actor=request.user, token=token, source_ip=client_ip(request))
        return Response(h.JoinTokenSerializer(_token(token)).data)
