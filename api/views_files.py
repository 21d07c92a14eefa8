"""The API's file endpoints: transfers (the sandbox page's Files in and out card: an upload into
imports/, downloads from exports/) and checkpoints (its Storage card), thin over the same
services as those cards (sandboxes.services.transfer, storage.services), errors mapped as in
api/views.py. A checkpoint, a rollback and a delete run in the request, as on the page (they take
milliseconds, a rollback also the container's recreation): they answer when done."""

from django.conf import settings
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlpanel.http import client_ip
from controlpanel.uploads import sent_name
from sandboxes import engine, policy
from sandboxes import selectors as sandbox_selectors
from sandboxes.services import SandboxError, transfer
from storage import pool
from storage import selectors as storage_selectors
from storage import services as storage
from storage.models import Checkpoint

from . import serializers as s
from . import serializers_files as f
from .helpers import Attributed, DownloadNegotiation, MultipartUpload, id_or_404
from .models import ApiToken
from .views import BODY, ERRORS, NOT_FOUND, PK, PanelAPIView, _validated

REFUSED = {409: OpenApiResponse(s.ErrorSerializer, description="Refused now (the page's message): the sandbox's state, or its host's.")}
TRANSFER_REFUSED = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="Refused (the page's message): a bad name or path, or folders out of reach.")
}
FAILED = {503: OpenApiResponse(s.ErrorSerializer, description="The storage pool or the engine failed; the message says how.")}
CHECKPOINT_NOT_FOUND = {404: OpenApiResponse(s.ErrorSerializer, description="No such checkpoint, or not one you may see.")}
CHECKPOINT_PK = OpenApiParameter("pk", int, OpenApiParameter.PATH, description="The checkpoint's id.")


def _attribution(request: Request) -> dict[str, str] | None:
    token = request.auth
    return {"via": "api", "token": token.prefix} if isinstance(token, ApiToken) else None


class TransferFiles(PanelAPIView):
    @extend_schema(
        operation_id="transfer_files",
        parameters=[PK, f.PathQuery],
        responses={200: f.TransferFilesSerializer, **TRANSFER_REFUSED, **ERRORS, **NOT_FOUND},
        summary="What imports/ and exports/<path> hold (operators; the Files in and out card)",
    )
    def get(self, request: Request, pk: str) -> Response:
        sandbox = self.sandbox_or_404(request, pk)
        path = _validated(f.PathQuery, request.query_params.dict()).validated_data.get("path", "")
        try:
            imports = transfer.list_folder(user=request.user, sandbox=sandbox, folder=transfer.UPLOAD_FOLDER)
            exports = transfer.list_folder(user=request.user, sandbox=sandbox, folder=transfer.DOWNLOAD_FOLDER, path=path)
        except transfer.TransferError as exc:
            return Response({"detail": str(exc)}, status=400)
        parts = [p for p in path.split("/") if p]
        return Response(f.TransferFilesSerializer({"imports": imports, "exports": exports, "path": "/".join(parts)}).data)


class TransferUpload(MultipartUpload, PanelAPIView):
    @staticmethod
    def upload_limit() -> int:
        return settings.TRANSFER_MAX_UPLOAD_BYTES

    @extend_schema(
        operation_id="transfer_upload",
        parameters=[PK],
        request={"multipart/form-data": f.UploadSerializer},
        responses={
            201: f.UploadedSerializer,
            400: OpenApiResponse(
                OpenApiTypes.OBJECT, description="No file, a bad name, a bad Content-Length, or an upload that stopped short."
            ),
            411: OpenApiResponse(s.ErrorSerializer, description="No Content-Length (a chunked upload is not taken)."),
            413: OpenApiResponse(s.ErrorSerializer, description="Larger than TRANSFER_MAX_UPLOAD_BYTES; nothing was written."),
            415: OpenApiResponse(s.ErrorSerializer, description="The body is not multipart/form-data."),
            **ERRORS,
            **NOT_FOUND,
        },
        summary="Upload one file into imports/ (read-only inside the sandbox), under the name given",
    )
    def post(self, request: Request, pk: str) -> Response:
        sandbox = self.sandbox_or_404(request, pk)
        self.limit_upload(request)
        data = request.data
        self.upload_refused(request)
        uploaded = request.FILES.get("file")
        if uploaded is None:
            raise exceptions.ValidationError({"file": ["Choose a file to upload."]})
        name = data.get("name", "")
        name = (name.strip() if isinstance(name, str) else "") or sent_name(request._request, "file")
        try:
            sha256 = transfer.upload(actor=request.user, sandbox=sandbox, name=name, source=uploaded, source_ip=client_ip(request))
        except transfer.TransferError as exc:
            return Response({"detail": f"Upload refused: {exc}"}, status=400)
        return Response({"path": f"{transfer.UPLOAD_FOLDER}/{name}", "sha256": sha256}, status=status.HTTP_201_CREATED)


class TransferDownload(DownloadNegotiation, PanelAPIView):
    @extend_schema(
        operation_id="transfer_download",
        parameters=[PK, f.PathQuery],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="A file of exports/, streamed."),
            (200, "application/gzip"): OpenApiResponse(OpenApiTypes.BINARY, description="A folder of exports/ as a .tar.gz, streamed."),
            **TRANSFER_REFUSED,
            **ERRORS,
            **NOT_FOUND,
        },
        summary="Download exports/<path>: a file, or a folder as a streamed .tar.gz (operators)",
    )
    def get(self, request: Request, pk: str) -> StreamingHttpResponse:
        sandbox = self.sandbox_or_404(request, pk)
        path = _validated(f.PathQuery, request.query_params.dict()).validated_data.get("path", "")
        try:
            found = transfer.download(actor=request.user, sandbox=sandbox, path=path, source_ip=client_ip(request))
        except transfer.TransferError as exc:
            return Response({"detail": str(exc)}, status=400)
        content_type = "application/gzip" if found.is_archive else "application/octet-stream"
        # The service audits when the stream ends, after this returns: under the token's attribution still.
        response = StreamingHttpResponse(Attributed(found, _attribution(request)), content_type=content_type)
        response["Content-Disposition"] = content_disposition_header(True, found.name)
        response["X-Content-Type-Options"] = "nosniff"
        return response


# --- checkpoints ------------------------------------------------------------------------------


def _storage_errors(step):
    """Run `step`; the storage card's refusals as answers (never a 500)."""
    try:
        return step()
    except SandboxError as exc:
        return Response({"detail": str(exc)}, status=409)
    except (pool.PoolError, engine.EngineError) as exc:
        return Response({"detail": str(exc)}, status=503)
    except policy.PolicyViolation as exc:
        return Response({"detail": "Refused by the security policy.", "problems": exc.problems}, status=400)


class CheckpointList(PanelAPIView):
    @extend_schema(
        operation_id="checkpoints_list",
        parameters=[f.CheckpointQuery],
        responses={
            200: f.CheckpointRowSerializer(many=True),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="No sandbox given, or not one you may see."),
            **ERRORS,
        },
        summary="A sandbox's checkpoints, newest first (empty for one outside the storage pool)",
    )
    def get(self, request: Request) -> Response:
        query = _validated(f.CheckpointQuery, request.query_params.dict()).validated_data
        sandbox = sandbox_selectors.sandbox_get_visible(user=request.user, pk=query["sandbox"])
        if sandbox is None:
            raise exceptions.ValidationError({"sandbox": ["No such sandbox."]})
        rows = storage_selectors.checkpoints_of(sandbox) if sandbox.in_pool else []
        return Response([{**f.CheckpointSerializer(row.checkpoint).data, "size": row.size} for row in rows])

    @extend_schema(
        operation_id="checkpoints_create",
        request=f.CheckpointCreateSerializer,
        responses={
            201: f.CheckpointSerializer,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="A bad body, or no such sandbox you may see."),
            **REFUSED,
            **FAILED,
            **ERRORS,
            **BODY,
        },
        summary="Take a checkpoint of a sandbox (operators; frozen for the instant of the snapshot)",
    )
    def post(self, request: Request) -> Response:
        data = _validated(f.CheckpointCreateSerializer, request.data).validated_data
        sandbox = sandbox_selectors.sandbox_get_visible(user=request.user, pk=data["sandbox"])
        if sandbox is None:
            raise exceptions.ValidationError({"sandbox": ["No such sandbox."]})

        def step():
            made = storage.checkpoint_create(actor=request.user, sandbox=sandbox, label=data.get("label", ""), source_ip=client_ip(request))
            return Response(
                f.CheckpointSerializer(made).data, status=status.HTTP_201_CREATED, headers={"Location": f"/api/v1/checkpoints/{made.pk}/"}
            )

        return _storage_errors(step)


def _checkpoint_or_404(request: Request, pk: str) -> Checkpoint:
    sandboxes = sandbox_selectors.sandbox_list_visible(user=request.user)
    found = Checkpoint.objects.filter(pk=id_or_404(pk, "checkpoint"), sandbox__in=sandboxes).select_related("sandbox__team").first()
    if found is None:
        raise exceptions.NotFound("No such checkpoint.")
    return found


class CheckpointDetail(PanelAPIView):
    @extend_schema(
        operation_id="checkpoints_retrieve",
        parameters=[CHECKPOINT_PK],
        responses={200: f.CheckpointSerializer, **ERRORS, **CHECKPOINT_NOT_FOUND},
        summary="One checkpoint",
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(f.CheckpointSerializer(_checkpoint_or_404(request, pk)).data)

    @extend_schema(
        operation_id="checkpoints_destroy",
        parameters=[CHECKPOINT_PK],
        responses={204: None, **REFUSED, **FAILED, **ERRORS, **CHECKPOINT_NOT_FOUND},
        summary="Delete a checkpoint (operators)",
    )
    def delete(self, request: Request, pk: str) -> Response:
        target = _checkpoint_or_404(request, pk)

        def step():
            storage.checkpoint_delete(actor=request.user, checkpoint=target, source_ip=client_ip(request))
            return Response(status=status.HTTP_204_NO_CONTENT)

        return _storage_errors(step)


class CheckpointRollback(PanelAPIView):
    @extend_schema(
        operation_id="checkpoints_rollback",
        parameters=[CHECKPOINT_PK],
        request=None,
        responses={
            200: OpenApiResponse(f.RollbackSerializer, description="Rolled back (it runs in the request, as on the page)."),
            400: OpenApiResponse(s.PolicyErrorSerializer, description="The security policy refused the recreated container."),
            **REFUSED,
            **FAILED,
            **ERRORS,
            **CHECKPOINT_NOT_FOUND,
        },
        summary="Put the sandbox back to a checkpoint (operators); what was there is kept as a checkpoint",
    )
    def post(self, request: Request, pk: str) -> Response:
        target = _checkpoint_or_404(request, pk)
        sandbox = target.sandbox

        def step():
            before = storage.rollback(actor=request.user, sandbox=sandbox, checkpoint=target, source_ip=client_ip(request))
            fresh = self.sandbox_or_404(request, sandbox.pk)
            return Response({"before": f.CheckpointSerializer(before).data, "sandbox": self.detail(request, fresh)})

        return _storage_errors(step)
