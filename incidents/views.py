"""Thin views of the incident wizard."""

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST

from backups.models import Backup
from controlpanel.http import client_ip
from sandboxes.selectors import visible_sandbox_or_404
from sandboxes.services import SandboxError
from teams.models import Team
from teams.permissions import Role, has_role, user_role

from . import selectors, services
from .models import Incident


def _get_incident(request: HttpRequest, pk: int) -> Incident:
    incident = selectors.incident_get_visible(user=request.user, pk=pk)
    if incident is None:
        raise Http404("No such incident.")
    return incident


def incident_list(request: HttpRequest) -> HttpResponse:
    admin_teams = [t for t in Team.objects.order_by("name") if has_role(user=request.user, team=t, role=Role.ADMIN)]
    incidents = selectors.incidents_visible(user=request.user)[:200]
    return render(request, "incidents/list.html", {"incidents": incidents, "admin_teams": admin_teams})


def _declared(request: HttpRequest, *, severity: str) -> dict[str, Any]:
    """What a declare form (one sandbox's, or a whole team's freeze) says, as the services take
    it; `severity` when the form leaves it out."""
    return {
        "actor": request.user,
        "severity": request.POST.get("severity", severity),
        "summary": request.POST.get("summary", ""),
        "source_ip": client_ip(request),
    }


@require_POST
def incident_declare(request: HttpRequest, pk: int) -> HttpResponse:
    sandbox = visible_sandbox_or_404(user=request.user, pk=pk)
    try:
        incident = services.incident_declare(sandbox=sandbox, **_declared(request, severity=""))
    except SandboxError as exc:
        messages.error(request, str(exc))
        return redirect("sandbox_detail", pk=pk)
    return redirect("incident_detail", pk=incident.pk)


def incident_detail(request: HttpRequest, pk: int) -> HttpResponse:
    incident = _get_incident(request, pk)
    return render(request, "incidents/detail.html", _context(request, incident))


def incident_timeline(request: HttpRequest, pk: int) -> HttpResponse:
    """The wizard's live part: steps, timeline and the next step's form (reloads while a step runs)."""
    incident = _get_incident(request, pk)
    return render(request, "incidents/_wizard.html", _context(request, incident))


def _context(request: HttpRequest, incident: Incident) -> dict:
    role = user_role(user=request.user, team=incident.team)
    steps = []
    order = list(Incident.Step.values)
    current = order.index(incident.step)
    for index, step in enumerate(order):
        if index < current or (index == current and incident.state == Incident.State.DONE):
            state = "done"
        elif index == current:
            state = incident.state
        else:
            state = "todo"
        steps.append({"name": step, "state": state})
    return {
        "incident": incident,
        "steps": steps,
        "events": incident.events.all(),
        "can_operate": role in (Role.OPERATOR, Role.ADMIN),
        "next_step": services.NEXT.get(incident.step) if incident.state == Incident.State.DONE else None,
        "retry": incident.state == Incident.State.FAILED and incident.step != Incident.Step.CLOSE,
        "running": incident.state == Incident.State.RUNNING,
        "backups": Backup.objects.filter(sandbox=incident.sandbox, status=Backup.Status.DONE).exclude(kind=Backup.Kind.EVIDENCE)[:50],
        "reset_modes": Incident.ResetMode.choices,
    }


@require_POST
def incident_step(request: HttpRequest, pk: int) -> HttpResponse:
    incident = _get_incident(request, pk)
    step = request.POST.get("step", "")
    try:
        if step == Incident.Step.CLOSE:
            services.incident_close(
                actor=request.user,
                incident=incident,
                notes=request.POST.get("notes", ""),
                resolution=request.POST.get("resolution", ""),
                source_ip=client_ip(request),
            )
        else:
            backup = None
            if request.POST.get("reset_backup"):
                backup = Backup.objects.filter(pk=_int(request.POST["reset_backup"]), sandbox=incident.sandbox).first()
            services.incident_advance(
                actor=request.user,
                incident=incident,
                step=step,
                reset_mode=request.POST.get("reset_mode", ""),
                reset_backup=backup,
                drop_outside_links=bool(request.POST.get("drop_outside_links")),
                source_ip=client_ip(request),
            )
    except SandboxError as exc:
        messages.error(request, str(exc))
    return redirect("incident_detail", pk=pk)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def incident_report(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """The incident as a Markdown or a printable HTML report, with its evidence's hashes."""
    incident = _get_incident(request, pk)
    context = selectors.report_context(incident)
    if fmt == "md":
        text = render_to_string("incidents/report.md", context)
        response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="incident-{incident.pk}-{incident.sandbox_name}.md"'
    else:
        response = render(request, "incidents/report.html", context)
        if request.GET.get("download"):
            response["Content-Disposition"] = f'attachment; filename="incident-{incident.pk}-{incident.sandbox_name}.html"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


def incident_evidence(request: HttpRequest, pk: int) -> FileResponse:
    incident = _get_incident(request, pk)
    if not has_role(user=request.user, team=incident.team, role=Role.OPERATOR):
        raise PermissionDenied("Downloading evidence needs the operator role.")
    path = incident.evidence_path
    if path is None or not path.exists():
        raise Http404("This incident has no evidence archive yet.")
    services.audit_incident(
        request.user, incident, "incident.evidence_downloaded", {"sha256": incident.evidence_sha256}, client_ip(request)
    )
    return FileResponse(open(path, "rb"), as_attachment=True, filename=incident.evidence_file, content_type="application/gzip")


@require_POST
def team_freeze(request: HttpRequest, team_pk: int) -> HttpResponse:
    team = Team.objects.filter(pk=team_pk).first()
    if team is None or not has_role(user=request.user, team=team, role=Role.ADMIN):
        raise Http404("No such team.")
    try:
        incidents, skipped = services.freeze_team(team=team, **_declared(request, severity="high"))
    except SandboxError as exc:
        messages.error(request, str(exc))
    else:
        messages.warning(
            request,
            f"Pausing {len(incidents)} sandbox(es) of {team}; snapshots follow one by one."
            + (f" Skipped: {'; '.join(skipped)}" if skipped else ""),
        )
    return redirect("incident_list")
