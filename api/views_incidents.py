"""The API's incident endpoints: thin over the incident wizard's selectors and services
(incidents.views), errors mapped as in api/views.py (an IncidentError, the wizard's refusal, is a
409 with its message). Declare and each step queue their task: 202 with the incident's `url`,
where its step, state and timeline are read. Close runs in the request."""

from django.http import FileResponse, HttpResponse
from django.template.loader import render_to_string
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from backups.models import Backup
from controlpanel.http import client_ip
from incidents import selectors, services
from incidents.models import Incident
from sandboxes import selectors as sandbox_selectors
from sandboxes.services import SandboxError
from teams.permissions import Role, authorize

from . import serializers as s
from . import serializers_incidents as i
from .helpers import DownloadNegotiation, id_or_404, page_of
from .views import BAD, BODY, ERRORS, PanelAPIView, _validated

NOT_FOUND = {404: OpenApiResponse(s.ErrorSerializer, description="No such incident, or not one you may see.")}
REFUSED = {409: OpenApiResponse(s.ErrorSerializer, description="The wizard refuses it now (its message: the step, the state).")}
PK = OpenApiParameter("pk", int, OpenApiParameter.PATH, description="The incident's id.")


def _incident_or_404(request: Request, pk: int | str) -> Incident:
    incident = selectors.incident_get_visible(user=request.user, pk=id_or_404(pk, "incident"))
    if incident is None:
        raise exceptions.NotFound("No such incident.")
    return incident


def _accepted(incident: Incident) -> Response:
    url = f"/api/v1/incidents/{incident.pk}/"
    body = {"url": url, "incident": i.IncidentDetailSerializer(incident).data}
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": url})


class IncidentList(PanelAPIView):
    @extend_schema(
        operation_id="incidents_list",
        parameters=[i.IncidentFilter],
        responses={200: i.IncidentPageSerializer, **BAD, **ERRORS},
        summary="The incidents you may see, newest first, a page at a time",
    )
    def get(self, request: Request) -> Response:
        query = _validated(i.IncidentFilter, request.query_params.dict()).validated_data
        found = selectors.incidents_visible(user=request.user)
        for field in ("sandbox", "team"):
            if field in query:
                found = found.filter(**{f"{field}_id": query[field]})
        if query.get("open") is not None:
            closed = found.filter(step=Incident.Step.CLOSE, state=Incident.State.DONE)
            found = found.exclude(pk__in=closed.values("pk")) if query["open"] else closed
        return Response(page_of(request, found, query.get("page", 1), lambda rows: i.IncidentSerializer(rows, many=True).data))

    @extend_schema(
        operation_id="incidents_declare",
        request=i.DeclareSerializer,
        responses={
            202: OpenApiResponse(
                i.IncidentAcceptedSerializer,
                description="Declared: the sandbox is held and its pause is under way (state failed, saying why, if it could not be).",
            ),
            **BAD,
            **REFUSED,
            **ERRORS,
            **BODY,
        },
        summary="Declare an incident on a sandbox (operators): held and paused at once",
    )
    def post(self, request: Request) -> Response:
        data = _validated(i.DeclareSerializer, request.data).validated_data
        sandbox = sandbox_selectors.sandbox_get_visible(user=request.user, pk=data["sandbox"])
        if sandbox is None:
            raise exceptions.ValidationError({"sandbox": ["No such sandbox."]})
        try:
            incident = services.incident_declare(
                actor=request.user, sandbox=sandbox, severity=data["severity"], summary=data["summary"], source_ip=client_ip(request)
            )
        except SandboxError as exc:
            return Response({"detail": str(exc)}, status=409)
        return _accepted(incident)


class IncidentDetail(PanelAPIView):
    @extend_schema(
        operation_id="incidents_retrieve",
        parameters=[PK],
        responses={200: i.IncidentDetailSerializer, **ERRORS, **NOT_FOUND},
        summary="One incident: its step and state, evidence, timeline and next step",
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(i.IncidentDetailSerializer(_incident_or_404(request, pk)).data)


class IncidentStep(PanelAPIView):
    @extend_schema(
        operation_id="incidents_step",
        parameters=[PK],
        request=i.StepSerializer,
        responses={
            202: OpenApiResponse(i.IncidentAcceptedSerializer, description="Claimed and queued: its state is at `url`."),
            **BAD,
            **REFUSED,
            503: OpenApiResponse(s.ErrorSerializer, description="The task queue refused the step: it failed at once; retry it later."),
            **ERRORS,
            **BODY,
            **NOT_FOUND,
        },
        summary="Start the wizard's next step (snapshot, stop, reset) or run a failed one again (operators)",
    )
    def post(self, request: Request, pk: str) -> Response:
        incident = _incident_or_404(request, pk)
        data = _validated(i.StepSerializer, request.data).validated_data
        backup = None
        if data.get("reset_backup"):  # as the page: a backup of this sandbox, or none (the service says so)
            backup = Backup.objects.filter(pk=data["reset_backup"], sandbox=incident.sandbox).first()
        try:
            incident = services.incident_advance(
                actor=request.user,
                incident=incident,
                step=data["step"],
                reset_mode=data.get("reset_mode", ""),
                reset_backup=backup,
                drop_outside_links=data["drop_outside_links"],
                source_ip=client_ip(request),
            )
        except SandboxError as exc:
            return Response({"detail": str(exc)}, status=409)
        incident.refresh_from_db()  # the queue may have refused the step: then it ended at once, and says why
        if incident.state == Incident.State.FAILED:
            url = f"/api/v1/incidents/{incident.pk}/"
            return Response({"detail": incident.step_detail, "url": url}, status=503, headers={"Retry-After": "30"})
        return _accepted(incident)


class IncidentClose(PanelAPIView):
    @extend_schema(
        operation_id="incidents_close",
        parameters=[PK],
        request=i.CloseSerializer,
        responses={200: i.IncidentDetailSerializer, **BAD, **REFUSED, **ERRORS, **BODY, **NOT_FOUND},
        summary="Close the incident with a resolution (operators): the sandbox is released",
    )
    def post(self, request: Request, pk: str) -> Response:
        incident = _incident_or_404(request, pk)
        data = _validated(i.CloseSerializer, request.data).validated_data
        try:
            incident = services.incident_close(
                actor=request.user, incident=incident, notes=data["notes"], resolution=data["resolution"], source_ip=client_ip(request)
            )
        except SandboxError as exc:
            return Response({"detail": str(exc)}, status=409)
        return Response(i.IncidentDetailSerializer(incident).data)


class _Report(DownloadNegotiation, PanelAPIView):
    template = ""
    content_type = ""
    suffix = ""

    def get(self, request: Request, pk: str) -> HttpResponse:
        incident = _incident_or_404(request, pk)
        text = render_to_string(self.template, selectors.report_context(incident))
        response = HttpResponse(text, content_type=self.content_type)
        response["Content-Disposition"] = f'attachment; filename="incident-{incident.pk}-{incident.sandbox_name}.{self.suffix}"'
        response["X-Content-Type-Options"] = "nosniff"
        return response


class IncidentReportMarkdown(_Report):
    template, content_type, suffix = "incidents/report.md", "text/markdown; charset=utf-8", "md"

    @extend_schema(
        operation_id="incidents_report_markdown",
        parameters=[PK],
        responses={(200, "text/markdown"): OpenApiResponse(OpenApiTypes.STR, description="The report."), **ERRORS, **NOT_FOUND},
        summary="The incident's report as Markdown, with its evidence's hashes",
    )
    def get(self, request: Request, pk: str) -> HttpResponse:
        return super().get(request, pk)


class IncidentReportHtml(_Report):
    template, content_type, suffix = "incidents/report.html", "text/html; charset=utf-8", "html"

    @extend_schema(
        operation_id="incidents_report_html",
        parameters=[PK],
        responses={(200, "text/html"): OpenApiResponse(OpenApiTypes.STR, description="The printable report."), **ERRORS, **NOT_FOUND},
        summary="The incident's report as printable HTML, with its evidence's hashes",
    )
    def get(self, request: Request, pk: str) -> HttpResponse:
        return super().get(request, pk)


class IncidentEvidence(DownloadNegotiation, PanelAPIView):
    @extend_schema(
        operation_id="incidents_evidence",
        parameters=[PK],
        responses={
            (200, "application/gzip"): OpenApiResponse(OpenApiTypes.BINARY, description="The evidence archive, streamed."),
            **ERRORS,
            404: OpenApiResponse(s.ErrorSerializer, description="No such incident, one you may not see, or no evidence archive yet."),
        },
        summary="Download the incident's evidence archive (operators)",
    )
    def get(self, request: Request, pk: str) -> FileResponse:
        incident = _incident_or_404(request, pk)
        authorize(request.user, incident.team, Role.OPERATOR)  # as the page's has_role, under the token's scope
        path = incident.evidence_path
        if path is None or not path.exists():
            raise exceptions.NotFound("This incident has no evidence archive yet.")
        services.audit_incident(
            request.user, incident, "incident.evidence_downloaded", {"sha256": incident.evidence_sha256}, client_ip(request)
        )
        return FileResponse(open(path, "rb"), as_attachment=True, filename=incident.evidence_file, content_type="application/gzip")
