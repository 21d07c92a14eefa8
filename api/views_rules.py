"""A sandbox's standing rules through the API: its daily backup (the Backups card's Schedule
form, backups.services.schedule_set) and how long its checkpoints are kept (the Storage card's
retention form, storage.services.checkpoint_retention_set). Reading needs what seeing the
sandbox needs; a change needs the operator role, decided (and audited) by the service, so each
is refused exactly where the card refuses it and a token's scope narrows it further."""

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from backups import services as backups
from backups.models import BackupSchedule
from controlpanel.http import client_ip
from sandboxes.models import Sandbox
from sandboxes.services import SandboxError
from storage import services as storage
from teams.permissions import Role, authorize

from . import serializers_rules as r
from .views import BAD, BODY, ERRORS, NOT_FOUND, PK, PanelAPIView, _validated
from .views_files import FAILED, REFUSED, _storage_errors


def _schedule(sandbox: Sandbox) -> dict:
    found = BackupSchedule.objects.filter(sandbox=sandbox).first()
    if found is None:
        return {"configured": False, "enabled": False, "at": None, "keep_last": None, "keep_days": None, "last_run_on": None}
    return r.ScheduleSerializer(
        {
            "configured": True,
            "enabled": found.enabled,
            "at": found.at,
            "keep_last": found.keep_last,
            "keep_days": found.keep_days,
            "last_run_on": found.last_run_on,
        }
    ).data  # type: ignore[return-value]


class SandboxBackupSchedule(PanelAPIView):
    """The sandbox's daily backup: read it, set it (PUT, as the Schedule form), turn it off (DELETE)."""

    @extend_schema(
        operation_id="sandboxes_backup_schedule_retrieve",
        parameters=[PK],
        responses={200: r.ScheduleSerializer, **ERRORS, **NOT_FOUND},
        summary="The sandbox's daily backup and how many scheduled backups it keeps",
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(_schedule(self.sandbox_or_404(request, pk)))

    @extend_schema(
        operation_id="sandboxes_backup_schedule_set",
        parameters=[PK],
        request=r.ScheduleSetSerializer,
        responses={200: r.ScheduleSerializer, **BAD, **ERRORS, **BODY, **NOT_FOUND},
        summary="Set the daily backup: its time and its limits (operators; as the Backups card's Schedule form)",
    )
    def put(self, request: Request, pk: str) -> Response:
        sandbox = self.sandbox_or_404(request, pk)
        data = _validated(r.ScheduleSetSerializer, request.data).validated_data
        try:
            backups.schedule_set(
                actor=request.user,
                sandbox=sandbox,
                enabled=data["enabled"],
                at=data["at"],
                keep_last=data["keep_last"],
                keep_days=data["keep_days"],
                source_ip=client_ip(request),
            )
        except SandboxError as exc:  # a limit the service refuses (its message, as the card shows it)
            return Response({"detail": str(exc)}, status=400)
        return Response(_schedule(sandbox))

    @extend_schema(
        operation_id="sandboxes_backup_schedule_clear",
        parameters=[PK],
        responses={204: None, **ERRORS, **NOT_FOUND},
        summary="Turn the daily backup off (operators; as unticking Enabled): its time and limits are kept",
    )
    def delete(self, request: Request, pk: str) -> Response:
        sandbox = self.sandbox_or_404(request, pk)
        found = BackupSchedule.objects.filter(sandbox=sandbox).first()
        if found is not None and found.enabled:
            backups.schedule_set(
                actor=request.user,
                sandbox=sandbox,
                enabled=False,
                at=found.at,
                keep_last=found.keep_last,
                keep_days=found.keep_days,
                source_ip=client_ip(request),
            )
        else:  # nothing to turn off: refused all the same where turning it off would be
            authorize(request.user, sandbox.team, Role.OPERATOR)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _retention(sandbox: Sandbox) -> dict:
    return {
        "keep_last": sandbox.checkpoint_keep_last,
        "keep_days": sandbox.checkpoint_keep_days,
        "keep_default": settings.SANDBOX_KEEP_CHECKPOINTS,
    }


class SandboxCheckpointRetention(PanelAPIView):
    """How many checkpoints the sandbox keeps, and for how long (the Storage card's retention form)."""

    @extend_schema(
        operation_id="sandboxes_checkpoint_retention_retrieve",
        parameters=[PK],
        responses={200: r.RetentionSerializer, **ERRORS, **NOT_FOUND},
        summary="How many checkpoints the sandbox keeps, and for how many days",
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(_retention(self.sandbox_or_404(request, pk)))

    @extend_schema(
        operation_id="sandboxes_checkpoint_retention_set",
        parameters=[PK],
        request=r.RetentionSetSerializer,
        responses={
            200: OpenApiResponse(r.RetentionSetResultSerializer, description="Set, and the checkpoints it no longer keeps deleted."),
            **BAD,
            **REFUSED,
            **FAILED,
            **ERRORS,
            **BODY,
            **NOT_FOUND,
        },
        summary="Set the checkpoint retention (operators); checkpoints beyond it go at once (never while an incident holds it)",
    )
    def put(self, request: Request, pk: str) -> Response:
        sandbox = self.sandbox_or_404(request, pk)
        data = _validated(r.RetentionSetSerializer, request.data).validated_data

        def step():
            removed = storage.checkpoint_retention_set(
                actor=request.user, sandbox=sandbox, keep_last=data["keep_last"], keep_days=data["keep_days"], source_ip=client_ip(request)
            )
            return Response({**_retention(sandbox), "removed": removed})

        return _storage_errors(step)
