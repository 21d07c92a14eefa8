"""The API's backup endpoints: thin over the Backups pages' selectors, services and forms
(backups.views), with the errors mapped as api/views.py maps them:

    InvalidInput, a form's errors  400           PermissionDenied   403 (role, or the token's scope)
    PolicyViolation                400 problems  not visible        404, as for no such backup
    SandboxError (BackupError)     409           queue refused      503: nothing is under way

A backup, a verify, an import and a restore are long: they answer 202 with the `url` where
their state and result are read (the backup's, or the restore's)."""

from django.conf import settings
from django.http import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from backups import selectors, services
from backups.forms import ImportForm, RestoreForm
from backups.models import Backup, Restore
from backups.services import downloads
from backups.tasks import backup_stage_task, backup_verify_task
from controlpanel.http import client_ip
from sandboxes import policy
from sandboxes import selectors as sandbox_selectors
from sandboxes.engine import EngineError
from sandboxes.services import InvalidInput, SandboxError
from teams.permissions import Role, authorize

from . import serializers as s
from . import serializers_backups as b
from .helpers import DownloadNegotiation, MultipartUpload, id_or_404, page_of
from .views import BAD, BODY, ERRORS, PanelAPIView, _validated

NOT_FOUND = {404: OpenApiResponse(s.ErrorSerializer, description="No such backup, or not one you may see.")}
REFUSED = {409: OpenApiResponse(s.ErrorSerializer, description="Refused now (the page's message): its state, or the sandbox's.")}
QUEUE_DOWN = {503: OpenApiResponse(s.ErrorSerializer, description="The task queue refused the task: nothing is under way.")}
PK = OpenApiParameter("pk", int, OpenApiParameter.PATH, description="The backup's id.")


def _backup_or_404(request: Request, pk: int | str) -> Backup:
    backup = selectors.backup_get_visible(user=request.user, pk=id_or_404(pk, "backup"))
    if backup is None:
        raise exceptions.NotFound("No such backup.")
    return backup


def _detail(backup: Backup) -> dict:
    return b.BackupDetailSerializer(backup).data  # type: ignore[return-value]


def _accepted(backup: Backup) -> Response:
    url = f"/api/v1/backups/{backup.pk}/"
    return Response({"url": url, "backup": _detail(backup)}, status=status.HTTP_202_ACCEPTED, headers={"Location": url})


def _queue_down(detail: str, url: str) -> Response:
    return Response({"detail": detail, "url": url}, status=503, headers={"Retry-After": "30"})


class BackupList(PanelAPIView):
    """The Backups page's list, and the sandbox page's Back up now."""

    @extend_schema(
        operation_id="backups_list",
        parameters=[b.BackupFilter],
        responses={200: b.BackupPageSerializer, **BAD, **ERRORS},
        summary="The backups you may see, newest first, a page at a time",
    )
    def get(self, request: Request) -> Response:
        query = _validated(b.BackupFilter, request.query_params.dict()).validated_data
        found = selectors.backups_visible(user=request.user)
        for field in ("sandbox", "team"):
            if field in query:
                found = found.filter(**{f"{field}_id": query[field]})
        for field in ("status", "kind"):
            if field in query:
                found = found.filter(**{field: query[field]})
        return Response(page_of(request, found, query.get("page", 1), lambda rows: b.BackupSerializer(rows, many=True).data))

    @extend_schema(
        operation_id="backups_create",
        request=b.BackupCreateSerializer,
        responses={202: b.BackupAcceptedSerializer, **BAD, **REFUSED, **QUEUE_DOWN, **ERRORS, **BODY},
        summary="Back up a sandbox now (the sandbox page's Back up now)",
    )
    def post(self, request: Request) -> Response:
        data = _validated(b.BackupCreateSerializer, request.data).validated_data
        sandbox = sandbox_selectors.sandbox_get_visible(user=request.user, pk=data["sandbox"])
        if sandbox is None:
            raise exceptions.ValidationError({"sandbox": ["No such sandbox."]})
        try:
            backup = services.backup_request(actor=request.user, sandbox=sandbox, source_ip=client_ip(request))
        except SandboxError as exc:
            return Response({"detail": str(exc)}, status=409)
        backup.refresh_from_db()  # the queue may have refused it: then it ended at once, and says why
        if backup.status == Backup.Status.FAILED:
            return _queue_down(backup.detail, f"/api/v1/backups/{backup.pk}/")
        return _accepted(backup)


class BackupDetail(PanelAPIView):
    @extend_schema(
        operation_id="backups_retrieve",
        parameters=[PK],
        responses={200: b.BackupDetailSerializer, **ERRORS, **NOT_FOUND},
        summary="One backup: its state, progress, verification and restores",
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(_detail(_backup_or_404(request, pk)))

    @extend_schema(
        operation_id="backups_destroy",
        parameters=[PK],
        responses={204: None, **REFUSED, **ERRORS, **NOT_FOUND},
        summary="Delete a backup (admins; never evidence, a running backup or one being restored)",
    )
    def delete(self, request: Request, pk: str) -> Response:
        backup = _backup_or_404(request, pk)
        try:
            services.backup_delete(actor=request.user, backup=backup, source_ip=client_ip(request))
        except SandboxError as exc:
            return Response({"detail": str(exc)}, status=409)
        return Response(status=status.HTTP_204_NO_CONTENT)


class BackupDownload(DownloadNegotiation, PanelAPIView):
    @extend_schema(
        operation_id="backups_download",
        parameters=[PK],
        responses={
            (200, "application/gzip"): OpenApiResponse(OpenApiTypes.BINARY, description="The archive, streamed."),
            202: OpenApiResponse(
                b.StagingSerializer,
                description="The backup is on a host agent's machine: that host is making it ready (Retry-After); ask again.",
            ),
            **ERRORS,
            404: OpenApiResponse(s.ErrorSerializer, description="No such backup, one you may not see, or one with no file."),
            503: OpenApiResponse(b.StagingSerializer, description="Its host's engine or the task queue does not answer now (Retry-After)."),
        },
        summary="Download a finished backup's archive (operators)",
    )
    def get(self, request: Request, pk: str) -> HttpResponseBase:
        backup = _backup_or_404(request, pk)
        authorize(request.user, backup.team, Role.OPERATOR)  # as the page's has_role, under the token's scope
        if backup.status == Backup.Status.DONE and downloads.remote(backup):
            return self._remote(request, backup)
        if backup.status != Backup.Status.DONE or not backup.path.exists():
            raise exceptions.NotFound("This backup has no file.")
        services.backup.audit_backup(request.user, backup, "backup.downloaded", {"sha256": backup.sha256}, client_ip(request))
        return downloads.file_response(backup)

    def _remote(self, request: Request, backup: Backup) -> HttpResponseBase:
        """As the page: a backup written on a host agent's machine is streamed from that host's
        engine once the host has staged it (backups.services.downloads); until then 202, the
        staging asked for, and Retry-After."""
        url = f"/api/v1/backups/{backup.pk}/download/"
        try:
            stream = downloads.staged_stream(backup)
        except EngineError as exc:
            return Response(
                {"detail": f"{backup.file_name} cannot be read from its host now: {exc}", "url": url},
                status=503,
                headers={"Retry-After": "30"},
            )
        host = backup.sandbox.host.name  # type: ignore[union-attr]
        if stream is None:
            try:
                backup_stage_task.delay(backup.pk)
            except Exception:  # noqa: BLE001 - kombu raises several types for "broker down"
                return _queue_down("The download was not prepared: the task queue (Redis) is not reachable.", url)
            detail = f"{backup.file_name} is on host {host}: it is being made ready there. Ask again in a few seconds."
            return Response({"detail": detail, "url": url}, status=status.HTTP_202_ACCEPTED, headers={"Retry-After": "5", "Location": url})
        services.backup.audit_backup(request.user, backup, "backup.downloaded", {"sha256": backup.sha256, "host": host}, client_ip(request))
        return downloads.file_response(backup, stream)


class BackupVerify(PanelAPIView):
    @extend_schema(
        operation_id="backups_verify",
        parameters=[PK],
        request=None,
        responses={202: b.BackupAcceptedSerializer, **QUEUE_DOWN, **ERRORS, **NOT_FOUND},
        summary="Check a backup against its manifest; the outcome is its verified_at, verified_ok and verify_detail",
    )
    def post(self, request: Request, pk: str) -> Response:
        backup = _backup_or_404(request, pk)
        authorize(request.user, backup.team, Role.OPERATOR)
        try:
            backup_verify_task.delay(backup.pk)
        except Exception:  # noqa: BLE001 - kombu raises several types for "broker down"
            return _queue_down("The check was not started: the task queue (Redis) is not reachable.", f"/api/v1/backups/{backup.pk}/")
        return _accepted(backup)


class BackupCancel(PanelAPIView):
    @extend_schema(
        operation_id="backups_cancel",
        parameters=[PK],
        request=None,
        responses={202: b.BackupAcceptedSerializer, **REFUSED, **ERRORS, **NOT_FOUND},
        summary="Cancel a running backup; it ends as failed, saying so",
    )
    def post(self, request: Request, pk: str) -> Response:
        backup = _backup_or_404(request, pk)
        try:
            services.backup_cancel(actor=request.user, backup=backup, source_ip=client_ip(request))
        except SandboxError as exc:
            return Response({"detail": str(exc)}, status=409)
        backup.refresh_from_db()
        return _accepted(backup)


class BackupRestore(PanelAPIView):
    @extend_schema(
        operation_id="backups_restore",
        parameters=[PK],
        request=b.RestoreCreateSerializer,
        responses={
            202: OpenApiResponse(b.RestoreAcceptedSerializer, description="Claimed and queued: the restore's state is at `url`."),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="The form's errors, the rules' or the security policy's problems."),
            **REFUSED,
            **QUEUE_DOWN,
            **ERRORS,
            **BODY,
            **NOT_FOUND,
        },
        summary="Restore a backup into its sandbox (backed up first) or into a new sandbox",
    )
    def post(self, request: Request, pk: str) -> Response:
        backup = _backup_or_404(request, pk)
        data = _validated(b.RestoreCreateSerializer, request.data).validated_data
        form = RestoreForm(data, user=request.user, backup=backup)
        if not form.is_valid():
            raise exceptions.ValidationError({field or "non_field_errors": list(errors) for field, errors in form.errors.items()})
        cleaned = form.cleaned_data
        target = (
            {"sandbox": backup.sandbox} if cleaned["into"] == "self" else {"new_name": cleaned["new_name"].strip(), "team": cleaned["team"]}
        )
        try:
            restore = services.restore_request(
                actor=request.user, backup=backup, drop_outside_links=cleaned["drop_outside_links"], source_ip=client_ip(request), **target
            )
        except InvalidInput as exc:
            raise exceptions.ValidationError(
                {"new_name" if f == "name" else (f or "non_field_errors"): m for f, m in exc.errors.items()}
            ) from exc
        except policy.PolicyViolation as exc:
            return Response({"detail": "Refused by the security policy.", "problems": exc.problems}, status=400)
        except SandboxError as exc:
            return Response({"detail": str(exc)}, status=409)
        restore.refresh_from_db()  # the queue may have refused it: then it ended at once, and says why
        url = f"/api/v1/restores/{restore.pk}/"
        if restore.status in (Restore.Status.FAILED, Restore.Status.REFUSED):
            return _queue_down(restore.detail, url)
        body = {"url": url, "restore": b.RestoreSerializer(restore).data}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": url})


class RestoreDetail(PanelAPIView):
    @extend_schema(
        operation_id="restores_retrieve",
        parameters=[OpenApiParameter("pk", int, OpenApiParameter.PATH, description="The restore's id.")],
        responses={
            200: b.RestoreSerializer,
            **ERRORS,
            404: OpenApiResponse(s.ErrorSerializer, description="No such restore, or not one you may see."),
        },
        summary="One restore: its state and what it said",
    )
    def get(self, request: Request, pk: str) -> Response:
        sandboxes = sandbox_selectors.sandbox_list_visible(user=request.user, include_destroyed=True)
        restore = Restore.objects.filter(pk=id_or_404(pk, "restore"), sandbox__in=sandboxes).first()
        if restore is None:
            raise exceptions.NotFound("No such restore.")
        return Response(b.RestoreSerializer(restore).data)


class BackupImport(MultipartUpload, PanelAPIView):
    upload_what = "The archive"

    @staticmethod
    def upload_limit() -> int:
        return settings.BACKUP_IMPORT_MAX_BYTES

    @extend_schema(
        operation_id="backups_import",
        request={"multipart/form-data": b.BackupImportSerializer},
        responses={
            202: OpenApiResponse(b.BackupAcceptedSerializer, description="Written; its check is under way: its state is at `url`."),
            400: OpenApiResponse(
                OpenApiTypes.OBJECT, description="The form's errors, a bad Content-Length, or an upload that stopped short."
            ),
            411: OpenApiResponse(s.ErrorSerializer, description="No Content-Length (a chunked upload is not taken)."),
            413: OpenApiResponse(s.ErrorSerializer, description="Larger than BACKUP_IMPORT_MAX_BYTES; nothing was written."),
            415: OpenApiResponse(s.ErrorSerializer, description="The body is not multipart/form-data."),
            **REFUSED,
            **ERRORS,
        },
        summary="Import an archive made by a panel (checked before it can be restored)",
    )
    def post(self, request: Request) -> Response:
        self.limit_upload(request)
        data = request.data
        self.upload_refused(request)
        form = ImportForm({"team": data.get("team")}, {"archive": request.FILES.get("archive")}, user=request.user)
        if not form.is_valid():
            raise exceptions.ValidationError({field: list(errors) for field, errors in form.errors.items()})
        try:
            backup = services.backup_import(
                actor=request.user, team=form.cleaned_data["team"], source=form.cleaned_data["archive"], source_ip=client_ip(request)
            )
        except SandboxError as exc:
            return Response({"detail": str(exc)}, status=409)
        return _accepted(backup)
