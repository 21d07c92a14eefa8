"""The Hosts page (superusers only): each host's health and load, a new host, enable, drain,
delete. Thin: every rule is in hosts.services; anyone else gets 404, as for a page that does
not exist."""

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from controlpanel.http import client_ip

from . import join, selectors, services
from .forms import HostForm, JoinTokenForm
from .models import Host, JoinToken


def _superuser_only(request: HttpRequest) -> None:
    if not request.user.is_superuser:
        raise Http404("No such page.")


def host_list(
    request: HttpRequest, form: HostForm | None = None, token_form: JoinTokenForm | None = None, join_token: str = ""
) -> HttpResponse:
    _superuser_only(request)
    context = {
        "rows": selectors.host_rows(),
        "form": form or HostForm(),
        "token_form": token_form or JoinTokenForm(),
        "tokens": selectors.token_rows(),
        # Shown this once (only its hash is kept), to paste into `host join -`: never on a command
        # line, where the passwords and keys it carries would stay in the shell's history.
        "join_token": join_token,
        "stale_seconds": int(selectors.STALE_AFTER.total_seconds()),
    }
    failed = form is not None or (token_form is not None and not join_token)
    return render(request, "hosts/list.html", context, status=400 if failed else 200)


@require_POST
def host_add(request: HttpRequest) -> HttpResponse:
    _superuser_only(request)
    form = HostForm(request.POST)
    if not form.is_valid():
        return host_list(request, form)
    data = form.cleaned_data
    try:
        host = services.host_create(
            actor=request.user,
            name=data["name"],
            docker_url=data["docker_url"],
            cpus=data["cpus"],
            memory_mb=data["memory_mb"],
            disk_mb=data["disk_mb"],
            labels=data["labels"],
            source_ip=client_ip(request),
        )
    except services.HostError as exc:
        for field, problems in exc.errors.items():
            for problem in problems:
                form.add_error(field if field in form.fields else None, problem)
        return host_list(request, form)
    messages.info(request, f"Host {host.name} added.")
    return redirect("host_list")


@require_POST
def host_state(request: HttpRequest, pk: int) -> HttpResponse:
    """Enable, disable, drain or undrain (the button's `enabled` or `draining` field: 1 or 0)."""
    _superuser_only(request)
    host = get_object_or_404(Host, pk=pk)
    values = {f: request.POST[f] == "1" for f in ("enabled", "draining") if request.POST.get(f) in ("0", "1")}
    services.host_set_state(actor=request.user, host=host, source_ip=client_ip(request), **values)
    messages.info(request, f"Host {host.name} saved.")
    return redirect("host_list")


@require_POST
def host_delete(request: HttpRequest, pk: int) -> HttpResponse:
    _superuser_only(request)
    host = get_object_or_404(Host, pk=pk)
    try:
        services.host_delete(actor=request.user, host=host, source_ip=client_ip(request))
    except services.HostError as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, f"Host {host.name} deleted.")
    return redirect("host_list")


@require_POST
def token_add(request: HttpRequest) -> HttpResponse:
    """A join token for a host on another machine; the page shows its command this once."""
    _superuser_only(request)
    form = JoinTokenForm(request.POST)
    if not form.is_valid():
        return host_list(request, token_form=form)
    try:
        token, text = join.token_create(
            actor=request.user, name=form.cleaned_data["name"], labels=form.cleaned_data["labels"], source_ip=client_ip(request)
        )
    except services.HostError as exc:
        for field, problems in exc.errors.items():
            for problem in problems:
                form.add_error(field if field in form.fields else None, problem)
        return host_list(request, token_form=form)
    response = host_list(request, token_form=JoinTokenForm(), join_token=text)
    response["Cache-Control"] = "no-store"  # the token is in it
    return response


@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    _superuser_only(request)
    token = join.token_revoke(actor=request.user, token=get_object_or_404(JoinToken, pk=pk), source_ip=client_ip(request))
    messages.info(request, f"The join token for {token.name} is revoked{' and the host disabled' if token.host_id else ''}.")
    return redirect("host_list")
