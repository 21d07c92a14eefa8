"""Thin views: parse, authorise through services, render. All pages need login (middleware);
the health banners come from the context processor."""

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_POST

from controlpanel.http import client_ip
from controlpanel.uploads import limited_upload, sent_name, upload_problem
from teams import idle as idle_rule
from teams.permissions import Role, request_roles, user_role

from . import activity, engine, health, policy, selectors, services, transfer
from .forms import DenialFilterForm, DestroyForm, SandboxCreateForm
from .models import Sandbox
from .rows import render_rows, row_for, rows_for


def dashboard(request: HttpRequest) -> HttpResponse:
    roles = request_roles(request)
    search = request.GET.get("q", "").strip()[:100]
    page = selectors.sandbox_page(user=request.user, roles=roles, search=search, page=request.GET.get("page"))
    csrf = get_token(request)  # each call masks the token anew, with 32 random characters
    context = {
        "page": page,
        "rows_html": render_rows(rows_for(page.object_list, roles, csrf=csrf)),
        "search": search,
        "csrf": csrf,
        "can_create": any(r != Role.VIEWER for r in roles.values()),
    }
    return render(request, "sandboxes/dashboard.html", context)


def sandbox_create(request: HttpRequest) -> HttpResponse:
    form = SandboxCreateForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.sandbox_create(
                actor=request.user,
                team=data["team"],
                name=data["name"],
                image=data["image"],
                memory_mb=data["memory_mb"],
                cpus=data["cpus"],
                network_mode=data["network_mode"],
                extra_mounts=data["extra_mounts"],
                writable_root=data["writable_root"],
                low_ports_and_ping=data["low_ports_and_ping"],
                runtime=data.get("runtime") or Sandbox.Runtime.RUNC,
                selinux_level=(data.get("selinux_level") or "").strip(),
                egress_presets=data.get("egress_presets") or [],
                egress_allow=data.get("egress_allow") or "",
                disk_mb=data.get("disk_mb"),
                source_ip=client_ip(request),
            )
        except services.NotQueued as exc:
            messages.error(request, f"{data['name']} was recorded, but not started: {exc.reason}. Start it when the queue is back.")
            return redirect("dashboard")
        except services.InvalidInput as exc:
            for field, problems in exc.errors.items():
                form.add_error(field if field in form.fields else None, problems)
        except policy.PolicyViolation as exc:
            form.add_error("extra_mounts" if data["extra_mounts"] else None, exc.problems)
        else:
            messages.success(request, f"Creating {data['name']}…")
            return redirect("dashboard")
    return render(request, "sandboxes/create.html", {"form": form}, status=400 if form.errors else 200)


def sandbox_detail(request: HttpRequest, pk: int) -> HttpResponse:
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    hardening: list = []
    if sandbox.status != Sandbox.Status.DESTROYED and not health.docker_is_down():
        try:
            hardening = selectors.hardening_report(sandbox)
        except engine.EngineError:
            pass  # the banner says why; the page still shows what the panel knows
    context = {
        "sandbox": sandbox,
        "row": row_for(sandbox, user_role(user=request.user, team=sandbox.team), csrf=get_token(request), back_to_detail=True),
        "hardening": hardening,
        "csrf": get_token(request),
        "destroy_form": DestroyForm(sandbox=sandbox),
        "denial_filter": DenialFilterForm(auto_id="denials-%s"),
        "sessions": sandbox.terminal_sessions.all()[:10],
        "open_incident": selectors.open_incident(sandbox),
        "idle_stop": idle_rule.last_idle_stop(sandbox),
    }
    return render(request, "sandboxes/detail.html", context)


@require_POST
def sandbox_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    if action == Sandbox.Action.DESTROY:
        form = DestroyForm(request.POST, sandbox=sandbox)
        if not form.is_valid():
            messages.error(request, " ".join(str(e) for e in form.errors["confirm_name"]))
            return redirect("sandbox_detail", pk=pk)
    try:
        services.sandbox_request_action(actor=request.user, sandbox=sandbox, action=action, source_ip=client_ip(request))
    except services.SandboxError as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, f"{action.capitalize()} requested for {sandbox.name}.")
    if request.POST.get("next") == "detail" and action != Sandbox.Action.DESTROY:
        return redirect("sandbox_detail", pk=pk)
    return redirect("dashboard")


def sandbox_files(request: HttpRequest, pk: int) -> HttpResponse:
    """Files modified in the sandbox's folders lately (read on the host), and what changed in the
    container's own file system (`docker diff`): a partial the page loads and reloads."""
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    window = request.GET.get("within", "1h")
    if window not in activity.WINDOWS:
        window = "1h"
    found = activity.recent_files(sandbox, within_seconds=activity.WINDOWS[window])
    diff, diff_error = [], ""
    if sandbox.container_id and not health.docker_is_down():
        try:
            diff = engine.engine_for(sandbox, timeout=selectors.PAGE_TIMEOUT).diff(sandbox.container_id)[:500]
        except engine.EngineError as exc:
            diff_error = str(exc)
    context = {
        "sandbox": sandbox,
        "activity": found,
        "window": window,
        "windows": list(activity.WINDOWS),
        "diff": diff,
        "diff_error": diff_error,
    }
    return render(request, "sandboxes/_files.html", context)


def sandbox_logs_download(request: HttpRequest, pk: int) -> HttpResponse | StreamingHttpResponse:
    """The container's whole output, with timestamps and stream, streamed as a text file."""
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    if not sandbox.container_id:
        raise Http404("This sandbox has no container, so no output.")
    try:
        stream = engine.engine_for(sandbox).log_stream(sandbox.container_id, tail="all", follow=False)
    except engine.EngineError as exc:
        return HttpResponse(f"The output is not available: {exc}\n", status=503, content_type="text/plain; charset=utf-8")

    def lines():
        try:
            yield from engine.log_file_chunks(iter(stream))
        except engine.EngineError as exc:
            yield f"\n-- the download broke off: {exc}\n".encode()
        finally:
            stream.close()

    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(lines(), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{sandbox.name}-output-{stamp}.log"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


def sandbox_transfer(request: HttpRequest, pk: int) -> HttpResponse:
    """The page's Files in and out card: what imports/ and exports/ hold (one folder level at a
    time), an upload form and download links. Operators and above."""
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    path = request.GET.get("path", "")
    try:
        imports = transfer.list_folder(user=request.user, sandbox=sandbox, folder=transfer.UPLOAD_FOLDER)
        exports = transfer.list_folder(user=request.user, sandbox=sandbox, folder=transfer.DOWNLOAD_FOLDER, path=path)
        error = ""
    except transfer.TransferError as exc:
        imports, exports, error = [], [], str(exc)
    parts = [p for p in path.split("/") if p]
    context = {
        "sandbox": sandbox,
        "imports": imports,
        "exports": exports,
        "path": "/".join(parts),
        "parent": "/".join(parts[:-1]),
        "error": error,
        "limit": settings.TRANSFER_MAX_UPLOAD_BYTES,
    }
    return render(request, "sandboxes/_transfer.html", context)


@require_POST
@limited_upload(lambda: settings.TRANSFER_MAX_UPLOAD_BYTES)
def sandbox_upload(request: HttpRequest, pk: int) -> HttpResponse:
    """Upload one file into imports/ (read-only inside the sandbox), under the name given."""
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    uploaded = request.FILES.get("file")
    if problem := upload_problem(request, what="The file"):
        messages.error(request, problem)
        return redirect("sandbox_detail", pk=pk)
    if uploaded is None:
        messages.error(request, "Choose a file to upload.")
        return redirect("sandbox_detail", pk=pk)
    name = request.POST.get("name", "").strip() or sent_name(request, "file")
    try:
        sha256 = transfer.upload(actor=request.user, sandbox=sandbox, name=name, source=uploaded, source_ip=client_ip(request))
    except transfer.TransferError as exc:
        messages.error(request, f"Upload refused: {exc}")
    else:
        messages.success(request, f"Uploaded imports/{name} (sha256 {sha256}).")
    return redirect("sandbox_detail", pk=pk)


def sandbox_download(request: HttpRequest, pk: int) -> HttpResponse | StreamingHttpResponse:
    """Download exports/<path>: a file, or a folder as a streamed .tar.gz."""
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    try:
        found = transfer.download(actor=request.user, sandbox=sandbox, path=request.GET.get("path", ""), source_ip=client_ip(request))
    except transfer.TransferError as exc:
        return HttpResponse(f"{exc}\n", status=400, content_type="text/plain; charset=utf-8")
    content_type = "application/gzip" if found.is_archive else "application/octet-stream"
    response = StreamingHttpResponse(found, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, found.name)
    response["X-Content-Type-Options"] = "nosniff"
    return response
