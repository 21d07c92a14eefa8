"""A sandbox's settings, as its page changes them, each through the service its page's form
calls: network mode (sandboxes.services.sandbox_set_network), allowlist
(sandbox_set_allowlist), disk quota (storage.services.set_disk_quota), git identity and SSH key
(sandboxes.secrets). Those authorize (operators), check and audit; here only their errors are
answered: bad input 400, what the sandbox's state or the panel refuses 409, an engine or
storage pool that does not answer 503 (nothing is half-done: the services undo or refuse)."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from controlpanel.http import client_ip
from sandboxes import engine, network, policy, secrets, services
from sandboxes.models import Identity, Sandbox
from sandboxes.services.errors import InvalidInput, SandboxError
from storage import pool
from storage import services as storage

from . import serializers_settings as g
from .common import BAD, invalid
from .views import BODY, ERRORS, NOT_FOUND, PK, PanelAPIView, _validated

REFUSED = {
    409: OpenApiResponse(description="Its state, an incident's hold or the panel's rules refuse it now (the page's message)."),
    503: OpenApiResponse(description="Docker, the egress rules or the storage pool did not answer; retry."),
}
CHANGE = {**BAD, **ERRORS, **BODY, **NOT_FOUND, **REFUSED}


def _settings(sandbox: Sandbox) -> dict:
    identity = Identity.objects.filter(sandbox=sandbox).first() or Identity(sandbox=sandbox)
    return {
        "network_mode": sandbox.network_mode,
        "egress_presets": sandbox.egress_presets,
        "egress_allow": sandbox.egress_allow,
        "disk_mb": sandbox.disk_mb,
        "git_name": identity.git_name,
        "git_email": identity.git_email,
        "ssh_public": identity.ssh_public,
        "ssh_created_at": identity.ssh_created_at,
    }


class SettingsView(PanelAPIView):
    def apply(self, request: Request, pk: str, change) -> Response:
        """Run `change(sandbox, ip)` (one service call) and answer with the settings after it."""
        sandbox = self.sandbox_or_404(request, pk)
        try:
            change(sandbox, client_ip(request))
        except InvalidInput as exc:
            raise invalid(exc) from None
        except policy.PolicyViolation as exc:
            return Response({"detail": "Refused by the security policy: " + " ".join(exc.problems)}, status=409)
        except SandboxError as exc:  # StorageError too
            return Response({"detail": str(exc)}, status=409)
        except (pool.PoolError, engine.EngineError, network.EgressError, secrets.VaultError) as exc:
            return Response({"detail": str(exc)}, status=503, headers={"Retry-After": "30"})
        sandbox.refresh_from_db()
        return Response(g.SandboxSettingsSerializer(_settings(sandbox)).data)


class SandboxSettings(SettingsView):
    @extend_schema(
        operation_id="sandbox_settings_retrieve",
        parameters=[PK],
        responses={200: g.SandboxSettingsSerializer, **ERRORS, **NOT_FOUND},
        summary="A sandbox's network, allowlist, disk quota, git identity and SSH public key",
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(g.SandboxSettingsSerializer(_settings(self.sandbox_or_404(request, pk))).data)


class SandboxNetwork(SettingsView):
    @extend_schema(
        operation_id="sandbox_settings_network",
        parameters=[PK],
        request=g.NetworkSerializer,
        responses={200: g.SandboxSettingsSerializer, **CHANGE},
        summary="Change the network mode; a running sandbox is moved at once (operators)",
    )
    def put(self, request: Request, pk: str) -> Response:
        mode = _validated(g.NetworkSerializer, request.data).validated_data["network_mode"]
        return self.apply(
            request, pk, lambda box, ip: services.sandbox_set_network(actor=request.user, sandbox=box, mode=mode, source_ip=ip)
        )


class SandboxAllowlist(SettingsView):
    @extend_schema(
        operation_id="sandbox_settings_allowlist",
        parameters=[PK],
        request=g.AllowlistSerializer,
        responses={200: g.SandboxSettingsSerializer, **CHANGE},
        summary="Replace what allowlist mode reaches (presets and entries); in force at once (operators)",
    )
    def put(self, request: Request, pk: str) -> Response:
        data = _validated(g.AllowlistSerializer, request.data).validated_data
        return self.apply(
            request,
            pk,
            lambda box, ip: services.sandbox_set_allowlist(
                actor=request.user, sandbox=box, presets=data["egress_presets"], allow=data["egress_allow"], source_ip=ip
            ),
        )


class SandboxDisk(SettingsView):
    @extend_schema(
        operation_id="sandbox_settings_disk",
        parameters=[PK],
        request=g.DiskSerializer,
        responses={200: g.SandboxSettingsSerializer, **CHANGE},
        summary="Change the disk quota, running or not (operators; within the team's policy and the pool)",
    )
    def put(self, request: Request, pk: str) -> Response:
        disk_mb = _validated(g.DiskSerializer, request.data).validated_data["disk_mb"]
        return self.apply(
            request, pk, lambda box, ip: storage.set_disk_quota(actor=request.user, sandbox=box, disk_mb=disk_mb, source_ip=ip)
        )


class SandboxGitIdentity(SettingsView):
    @extend_schema(
        operation_id="sandbox_settings_git_identity",
        parameters=[PK],
        request=g.GitIdentitySerializer,
        responses={200: g.SandboxSettingsSerializer, **CHANGE},
        summary="Set (or, both empty, clear) the git identity of its commits; the next start applies it (operators)",
    )
    def put(self, request: Request, pk: str) -> Response:
        data = _validated(g.GitIdentitySerializer, request.data).validated_data
        return self.apply(
            request,
            pk,
            lambda box, ip: secrets.git_identity_set(
                actor=request.user, sandbox=box, name=data["git_name"], email=data["git_email"], source_ip=ip
            ),
        )


class SandboxSshKey(SettingsView):
    @extend_schema(
        operation_id="sandbox_settings_ssh_key",
        parameters=[PK],
        request=None,
        responses={200: g.SandboxSettingsSerializer, **ERRORS, **BODY, **NOT_FOUND, **REFUSED},
        summary="Make a new SSH key (the old one is gone); its public half is in the answer (operators)",
    )
    def post(self, request: Request, pk: str) -> Response:
        return self.apply(request, pk, lambda box, ip: secrets.ssh_key_regenerate(actor=request.user, sandbox=box, source_ip=ip))
