"""The audit trail: the audit page's list and filters (audit.selectors.audit_events_filtered,
limited to what the user may see), its exports streamed as the page streams them
(audit.export), and the check of an exported JSON Lines file, read a line at a time.

None of these write: reading the trail is not itself audited, as on the page. Checking a file
is a POST (it sends a body) that changes nothing, so a read token may make it too."""

import codecs

from django.conf import settings
from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import exceptions, negotiation, renderers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from audit import export
from audit.selectors import audit_events_filtered, chain_head_current, shows_positions

from . import serializers_audit as a
from .common import BAD
from .parsers import PayloadTooLarge
from .views import ERRORS, PanelAPIView, _validated

NDJSON = "application/x-ndjson"
PAGE_SIZE = 100  # as the page


class _Passthrough(renderers.BaseRenderer):
    """Lets a client that asks for the export's type (Accept) have it: the export is a
    streamed response of its own; anything rendered here (an error) is JSON all the same."""

    charset = "utf-8"
    format = "json"  # what it renders (errors); and the schema then offers no `?format=` choice

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return renderers.JSONRenderer().render(data, renderer_context=renderer_context)


class NDJSONRenderer(_Passthrough):
    media_type = NDJSON


class CSVRenderer(_Passthrough):
    media_type = "text/csv"


class _NoFormatOverride:
    URL_FORMAT_OVERRIDE = None


class ByAcceptOnly(negotiation.DefaultContentNegotiation):
    """The export's type is its path's (export.jsonl, export.csv): a `format` in the query is
    not DRF's renderer override here (which would answer 404 for one it does not know)."""

    settings = _NoFormatOverride()


def _filtered(request: Request, filter_class):
    query = _validated(filter_class, request.query_params.dict()).validated_data
    params = {k: str(v) for k, v in query.items() if k != "page"}
    events, applied, problems = audit_events_filtered(user=request.user, params=params)
    if problems:
        raise exceptions.ValidationError({"non_field_errors": problems})
    return events, applied, query


class AuditList(PanelAPIView):
    @extend_schema(
        operation_id="audit_list",
        parameters=[a.AuditListFilter],
        responses={200: a.AuditPageSerializer, **BAD, **ERRORS},
        summary="The audit trail you may see, newest first, 100 to a page (the audit page)",
    )
    def get(self, request: Request) -> Response:
        events, _applied, query = _filtered(request, a.AuditListFilter)
        fields = ["created_at", "actor_name", "action", "target", "sandbox_uuid", "team_id", "details", "source_ip"]
        if shows_positions(request.user):  # as the page
            fields.insert(0, "seq")
        page = Paginator(events.values(*fields), PAGE_SIZE).get_page(query.get("page", 1))
        url = request.build_absolute_uri()
        return Response(
            {
                "count": page.paginator.count,
                "next": replace_query_param(url, "page", page.next_page_number()) if page.has_next() else None,
                "previous": replace_query_param(url, "page", page.previous_page_number()) if page.has_previous() else None,
                "results": a.AuditEventSerializer(page.object_list, many=True).data,
            }
        )


class AuditExport(PanelAPIView):
    """As the page's Export buttons: the filtered events streamed a chunk at a time (flat memory)."""

    fmt = "jsonl"
    content_negotiation_class = ByAcceptOnly

    def get_renderers(self):
        return [renderers.JSONRenderer(), NDJSONRenderer() if self.fmt == "jsonl" else CSVRenderer()]

    def get(self, request: Request) -> StreamingHttpResponse:
        events, applied, _query = _filtered(request, a.AuditFilter)
        lines = export.export_for(request.user, events, fmt=self.fmt, filters=applied)
        content_type = NDJSON if self.fmt == "jsonl" else "text/csv; charset=utf-8"
        response = StreamingHttpResponse((line.encode() for line in lines), content_type=content_type)
        stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{self.fmt}"'
        response["X-Content-Type-Options"] = "nosniff"
        return response


def _export_schema(fmt: str, media: str, what: str):
    return extend_schema(
        operation_id=f"audit_export_{fmt}",
        parameters=[a.AuditFilter],
        responses={(200, media): OpenApiResponse(OpenApiTypes.STR, description=what), **BAD, **ERRORS},
        summary=f"Export the filtered events as {fmt.upper()} (streamed)",
    )


class AuditExportJSONL(AuditExport):
    fmt = "jsonl"

    @_export_schema(
        "jsonl", NDJSON, "A header, the events (each sealed) and an end line with the digest: POST it to /api/v1/audit/verify/."
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        return super().get(request)


class AuditExportCSV(AuditExport):
    fmt = "csv"

    @_export_schema("csv", "text/csv", "The same events for a spreadsheet (which cannot be checked: the JSON Lines file can).")
    def get(self, request: Request) -> StreamingHttpResponse:
        return super().get(request)


def _lines(stream, limit: int):
    """The body's lines as text, each read to at most `limit` bytes (export.read_lines's rule):
    never more than one line in memory. Bytes that are not UTF-8 become U+FFFD, which no seal
    matches: such a file fails, at its line."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while stream is not None and (chunk := stream.readline(limit)):
        yield decoder.decode(chunk)


class AuditVerify(PanelAPIView):
    reads_only = True  # api.auth.ScopeAllows: a read token may check a file (nothing changes)

    @extend_schema(
        operation_id="audit_verify",
        request={NDJSON: OpenApiTypes.STR},
        examples=[
            OpenApiExample("An export", value='{"type":"header",...}\n{"type":"event",...}\n{"type":"end",...}\n', request_only=True)
        ],
        responses={
            200: OpenApiResponse(a.AuditVerifySerializer, description="The verdict, ok or not, with the first problem and its line."),
            400: OpenApiResponse(description="A Content-Length that is not a number."),
            **ERRORS,
            413: OpenApiResponse(description="Larger than API_AUDIT_VERIFY_MAX_BYTES."),
            415: OpenApiResponse(description="Not application/x-ndjson."),
        },
        summary="Check an exported JSON Lines file (as `manage.py audit verify --file`): send it as the body",
    )
    def post(self, request: Request) -> Response:
        if request.content_type.split(";")[0].strip().lower() != NDJSON:
            raise exceptions.UnsupportedMediaType(request.content_type, detail=f"Send the export's JSON Lines as {NDJSON}.")
        limit = settings.API_AUDIT_VERIFY_MAX_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise exceptions.ParseError("Content-Length is not a number.") from None
        if length > limit:
            raise PayloadTooLarge(f"The file is larger than {limit} bytes (API_AUDIT_VERIFY_MAX_BYTES).")
        check = export.verify_lines(_lines(request.stream, export.MAX_LINE))
        body = {
            "ok": check.ok,
            "events": check.events,
            "problem": check.problem,
            "scope": check.scope,
            "filters": check.filters,
            "chain_head_current": chain_head_current(check.head) if check.ok else None,
        }
        return Response(a.AuditVerifySerializer(body).data)
