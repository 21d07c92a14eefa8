"""What the sandbox page's read-only cards show, through the API: the recently changed files
(read on the host, sandboxes.activity, and the container's own changes, `docker diff`) and the
disk use against the quota (storage.selectors.disk_usage). Whoever sees the sandbox reads them."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from sandboxes import activity, selectors
from storage import selectors as storage_selectors

from .serializers import StrictSerializer
from .views import BAD, ERRORS, NOT_FOUND, PK, PanelAPIView, _validated


class ActivityQuery(StrictSerializer):
    within = serializers.ChoiceField(required=False, choices=list(activity.WINDOWS), default="1h", help_text="How far back (1h).")


class ChangedFileSerializer(serializers.Serializer):
    folder = serializers.CharField(help_text="One of the sandbox's folders (Projects, imports, exports, …).")
    path = serializers.CharField(help_text="Inside the folder.")
    size = serializers.IntegerField()
    is_link = serializers.BooleanField()
    modified = serializers.DateTimeField()


class DiffSerializer(serializers.Serializer):
    path = serializers.CharField()
    kind = serializers.CharField(help_text="changed, added or deleted.")


class ActivitySerializer(serializers.Serializer):
    within = serializers.CharField()
    entries = ChangedFileSerializer(many=True, help_text="Files and links changed in that time, newest first (at most 500).")
    scanned = serializers.IntegerField(help_text="How many entries the walk read.")
    truncated = serializers.BooleanField(help_text="More changed than are listed, or part of the folders could not be read.")
    diff = DiffSerializer(many=True, help_text="What changed in the container's own file system, outside the folders (at most 500).")
    diff_error = serializers.CharField(allow_blank=True, help_text="Why the container's changes could not be read; empty when they were.")


class StorageSerializer(serializers.Serializer):
    in_pool = serializers.BooleanField(help_text="Whether it is in the storage pool (then it has a quota and checkpoints).")
    used_bytes = serializers.IntegerField(allow_null=True, help_text="What its folders, home and checkpoints take; null: unknown.")
    limit_bytes = serializers.IntegerField(allow_null=True, help_text="Its quota; null: none, or unknown.")
    percent = serializers.FloatField(allow_null=True)


class SandboxActivity(PanelAPIView):
    @extend_schema(
        operation_id="sandboxes_activity",
        parameters=[PK, ActivityQuery],
        responses={200: ActivitySerializer, **BAD, **ERRORS, **NOT_FOUND},
        summary="The files changed lately in the sandbox's folders, and the container's own changes (the page's Files card)",
    )
    def get(self, request: Request, pk: str) -> Response:
        sandbox = self.sandbox_or_404(request, pk)
        within = _validated(ActivityQuery, request.query_params.dict()).validated_data["within"]
        found, diff, diff_error = selectors.files_changed(sandbox, within)
        entries = [
            {"folder": e.folder, "path": e.path, "size": e.size, "is_link": e.is_link, "modified": e.modified} for e in found.entries
        ]
        body = {"within": within, "entries": entries, "scanned": found.scanned, "truncated": found.truncated, "diff": diff}
        return Response(ActivitySerializer({**body, "diff_error": diff_error}).data)


class SandboxStorage(PanelAPIView):
    @extend_schema(
        operation_id="sandboxes_storage",
        parameters=[PK],
        responses={200: StorageSerializer, **ERRORS, **NOT_FOUND},
        summary="The sandbox's disk use against its quota (the page's Storage card)",
    )
    def get(self, request: Request, pk: str) -> Response:
        sandbox = self.sandbox_or_404(request, pk)
        usage = storage_selectors.disk_usage(sandbox)
        body = {
            "in_pool": sandbox.in_pool,
            "used_bytes": usage.used if usage else None,
            "limit_bytes": usage.limit if usage else None,
            "percent": usage.percent if usage else None,
        }
        return Response(StorageSerializer(body).data)
