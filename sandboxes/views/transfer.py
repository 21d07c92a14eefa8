"""The Files in and out card of a sandbox's page: what imports/ and exports/ hold, an upload into
imports/ and downloads from exports/."""

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_POST

from controlpanel.http import client_ip
from controlpanel.uploads import limited_upload, sent_name, upload_problem

from .. import selectors
from ..services import transfer


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
