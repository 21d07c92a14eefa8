"""Thin views of the backups app: parse, call a service, render or redirect."""

from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from controlpanel.http import client_ip
from controlpanel.uploads import limited_upload, upload_problem
from sandboxes import policy
from sandboxes.engine import EngineError
from sandboxes.selectors import visible_sandbox_or_404
from sandboxes.services import InvalidInput, SandboxError
from teams.permissions import Role, has_role, user_role

from . import selectors, services
from .forms import ImportForm, RestoreForm, ScheduleForm
from .models import Backup, BackupSchedule
from .services import downloads
from .tasks import backup_stage_task, backup_verify_task


def sandbox_backups(request: HttpRequest, pk: int) -> HttpResponse:
    """The sandbox page's Backups card: a partial that reloads itself while something runs."""
    sandbox = visible_sandbox_or_404(user=request.user, pk=pk)
    role = user_role(user=request.user, team=sandbox.team)
    schedule = BackupSchedule.objects.filter(sandbox=sandbox).first()
    context = {
        "sandbox": sandbox,
        "backups": selectors.backups_of(sandbox)[:50],
        "restores": selectors.restores_of(sandbox)[:10],
        "running": selectors.any_running(sandbox),
        "can_operate": role in (Role.OPERATOR, Role.ADMIN),
        "can_delete": role == Role.ADMIN,
        "schedule": schedule,
        "schedule_form": ScheduleForm(instance=schedule, initial={"at": "03:00", "keep_last": 7}),
        "backup_root": settings.BACKUP_ROOT,
    }
    return render(request, "backups/_card.html", context)


@require_POST
def sandbox_backup_now(request: HttpRequest, pk: int) -> HttpResponse:
    sandbox = visible_sandbox_or_404(user=request.user, pk=pk)
    try:
        backup = services.backup_request(actor=request.user, sandbox=sandbox, source_ip=client_ip(request))
    except SandboxError as exc:
        messages.error(request, str(exc))
    else:
        backup.refresh_from_db()  # the queue may have refused it: then it ended at once, and says why
        if backup.status == backup.Status.FAILED:
            messages.error(request, backup.detail)
        else:
            messages.info(request, f"Backing up {sandbox.name} to {backup.file_name}…")
    return redirect("sandbox_detail", pk=pk)


@require_POST
def sandbox_backup_schedule(request: HttpRequest, pk: int) -> HttpResponse:
    sandbox = visible_sandbox_or_404(user=request.user, pk=pk)
    form = ScheduleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Schedule: " + " ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items()))
        return redirect("sandbox_detail", pk=pk)
    data = form.cleaned_data
    try:
        services.schedule_set(
            actor=request.user,
            sandbox=sandbox,
            enabled=data["enabled"],
            at=data["at"],
            keep_last=data["keep_last"],
            keep_days=data["keep_days"],
            source_ip=client_ip(request),
        )
    except SandboxError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Daily backup of {sandbox.name} {'set' if data['enabled'] else 'turned off'}.")
    return redirect("sandbox_detail", pk=pk)


def backup_list(request: HttpRequest) -> HttpResponse:
    backups = selectors.backups_visible(user=request.user)[:500]
    return render(request, "backups/list.html", {"backups": backups, "import_form": ImportForm(user=request.user)})


def _get_backup(request: HttpRequest, pk: int) -> Backup:
    backup = selectors.backup_get_visible(user=request.user, pk=pk)
    if backup is None:
        raise Http404("No such backup.")
    return backup


def backup_detail(request: HttpRequest, pk: int) -> HttpResponse:
    backup = _get_backup(request, pk)
    role = user_role(user=request.user, team=backup.team)
    context = {
        "backup": backup,
        "restore_form": RestoreForm(user=request.user, backup=backup),
        "can_operate": role in (Role.OPERATOR, Role.ADMIN),
        "can_delete": role == Role.ADMIN and not backup.is_evidence,
        "restores": backup.restores.all()[:20],
    }
    return render(request, "backups/detail.html", context)


def backup_download(request: HttpRequest, pk: int) -> HttpResponseBase:
    backup = _get_backup(request, pk)
    if not has_role(user=request.user, team=backup.team, role=Role.OPERATOR):
        raise PermissionDenied("Downloading a backup needs the operator role.")
    if backup.status == Backup.Status.DONE and downloads.remote(backup):
        return _remote_download(request, backup)
    if backup.status != Backup.Status.DONE or not backup.path.exists():
        raise Http404("This backup has no file.")
    services.backup.audit_backup(request.user, backup, "backup.downloaded", {"sha256": backup.sha256}, client_ip(request))
    return downloads.file_response(backup)


def _remote_download(request: HttpRequest, backup: Backup) -> HttpResponseBase:
    """A backup on another machine (a host agent's): streamed from its engine once that host has
    staged it; the first click asks for that and says to come back."""
    try:
        stream = downloads.staged_stream(backup)
    except EngineError as exc:
        messages.error(request, f"{backup.file_name} cannot be read from its host now: {exc}")
        return redirect("backup_detail", pk=backup.pk)
    if stream is None:
        host = backup.sandbox.host.name  # type: ignore[union-attr]
        try:
            backup_stage_task.delay(backup.pk)
        except Exception:  # noqa: BLE001 - kombu raises several types for "broker down"
            messages.error(request, "The download was not prepared: the task queue (Redis) is not reachable.")
        else:
            messages.info(request, f"{backup.file_name} is on host {host}: it is being made ready there. Download again in a few seconds.")
        return redirect("backup_detail", pk=backup.pk)
    where = {"sha256": backup.sha256, "host": backup.sandbox.host.name}  # type: ignore[union-attr]
    services.backup.audit_backup(request.user, backup, "backup.downloaded", where, client_ip(request))
    return downloads.file_response(backup, stream)


@require_POST
def backup_verify(request: HttpRequest, pk: int) -> HttpResponse:
    backup = _get_backup(request, pk)
    if not has_role(user=request.user, team=backup.team, role=Role.OPERATOR):
        raise PermissionDenied("Verifying a backup needs the operator role.")
    try:
        backup_verify_task.delay(backup.pk)
    except Exception:  # noqa: BLE001 - kombu raises several types for "broker down"
        messages.error(request, "The check was not started: the task queue (Redis) is not reachable.")
    else:
        messages.info(request, f"Checking {backup.file_name} against its manifest…")
    return redirect("backup_detail", pk=pk)


def _change(request: HttpRequest, backup: Backup, change: Callable[..., object], done: str) -> bool:
    """Carry out `change` (a service call) on the backup and say how it went: `done`, or why not."""
    try:
        change(actor=request.user, backup=backup, source_ip=client_ip(request))
    except SandboxError as exc:
        messages.error(request, str(exc))
        return False
    messages.success(request, done)
    return True


@require_POST
def backup_delete(request: HttpRequest, pk: int) -> HttpResponse:
    backup = _get_backup(request, pk)
    if _change(request, backup, services.backup_delete, f"Deleted {backup.file_name}."):
        return redirect("backup_list")
    return redirect("backup_detail", pk=pk)


@require_POST
def backup_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    backup = _get_backup(request, pk)
    _change(request, backup, services.backup_cancel, f"Cancelling {backup.file_name}…")
    return redirect("backup_detail", pk=pk)


@require_POST
def backup_restore(request: HttpRequest, pk: int) -> HttpResponse:
    backup = _get_backup(request, pk)
    form = RestoreForm(request.POST, user=request.user, backup=backup)
    if form.is_valid():
        data = form.cleaned_data
        try:
            if data["into"] == "self":
                restore = services.restore_request(
                    actor=request.user,
                    backup=backup,
                    sandbox=backup.sandbox,
                    drop_outside_links=data["drop_outside_links"],
                    source_ip=client_ip(request),
                )
            else:
                restore = services.restore_request(
                    actor=request.user,
                    backup=backup,
                    new_name=data["new_name"].strip(),
                    team=data["team"],
                    drop_outside_links=data["drop_outside_links"],
                    source_ip=client_ip(request),
                )
        except InvalidInput as exc:
            for field, problems in exc.errors.items():
                form.add_error("new_name" if field == "name" else (field if field in form.fields else None), problems)
        except policy.PolicyViolation as exc:
            form.add_error(None, exc.problems)
        except SandboxError as exc:
            form.add_error(None, str(exc))
        else:
            restore.refresh_from_db()  # the queue may have refused it: then it ended at once, and says why
            if restore.status in (restore.Status.FAILED, restore.Status.REFUSED):
                messages.error(request, restore.detail)
            else:
                messages.info(request, f"Restoring {backup.file_name} into {restore.sandbox.name}…")
            return redirect("sandbox_detail", pk=restore.sandbox_id)
    role = user_role(user=request.user, team=backup.team)
    context = {
        "backup": backup,
        "restore_form": form,
        "can_operate": role in (Role.OPERATOR, Role.ADMIN),
        "can_delete": role == Role.ADMIN and not backup.is_evidence,
        "restores": backup.restores.all()[:20],
    }
    return render(request, "backups/detail.html", context, status=400)


@require_POST
@limited_upload(lambda: settings.BACKUP_IMPORT_MAX_BYTES)
def backup_import(request: HttpRequest) -> HttpResponse:
    form = ImportForm(request.POST, request.FILES, user=request.user)
    if problem := upload_problem(request, what="The archive"):
        messages.error(request, problem)
        return redirect("backup_list")
    if not form.is_valid():
        messages.error(request, "Import: " + " ".join(" ".join(map(str, v)) for v in form.errors.values()))
        return redirect("backup_list")
    try:
        backup = services.backup_import(
            actor=request.user, team=form.cleaned_data["team"], source=form.cleaned_data["archive"], source_ip=client_ip(request)
        )
    except SandboxError as exc:
        messages.error(request, str(exc))
        return redirect("backup_list")
    messages.info(request, f"Imported as {backup.file_name}; checking it against its manifest…")
    return redirect("backup_detail", pk=backup.pk)
