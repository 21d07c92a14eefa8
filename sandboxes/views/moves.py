"""Moving a stopped sandbox to another host: the form on its page (operators), one service call."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods

from controlpanel.http import client_ip

from .. import selectors
from ..services import SandboxError
from ..services.moves import move_request


@require_http_methods(["POST"])
def sandbox_move(request: HttpRequest, pk: int) -> HttpResponse:
    """Start a move to the host chosen on the form; the page says why when it is refused."""
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    target = request.POST.get("host", "")[:63]
    try:
        move_request(actor=request.user, sandbox=sandbox, target_name=target, source_ip=client_ip(request))
    except SandboxError as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, f"{sandbox.name} is moving to host {target}; it stays stopped, and starts there at its next start.")
    return redirect("sandbox_detail", pk=pk)
