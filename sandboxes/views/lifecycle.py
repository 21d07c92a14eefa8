"""The lifecycle actions (Sandbox.Action: start, stop, reset, destroy and the rest), asked for
from the dashboard or a sandbox's page: each is requested through the services and carried out
by a task."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from controlpanel.http import client_ip

from .. import selectors, services
from ..forms import DestroyForm
from ..models import Sandbox


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
