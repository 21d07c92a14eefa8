"""A sandbox's network card: the refused connections (the decision log), the network mode and
the allowlist. Moved out of the secrets views (issue 15); the networking package may take it."""

from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from controlpanel.http import client_ip
from teams.models import Team
from teams.permissions import Role, has_role, team_ids_visible

from .. import selectors
from ..forms import DecisionQueryForm, DenialFilterForm
from ..models import Sandbox
from ..services import InvalidInput

DENIALS_PAGE_SIZE = 50


def sandbox_denials(request: HttpRequest, pk: int) -> HttpResponse:
    """The decision log of the sandbox, a page at a time, each attempt or by destination, as the
    card's filters say. The card polls this with the page and filters it shows (every 2 s; every
    10 s grouped, which reads all the rows that match), so a refresh never moves the reader."""
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    form = DenialFilterForm(request.GET)
    form.is_valid()
    kept = {k: v for k, v in form.cleaned_data.items() if v}  # only what is valid
    rows = selectors.egress_denials(
        sandbox=sandbox,
        search=kept.get("q", ""),
        protocol=kept.get("protocol", ""),
        since=kept.get("since", ""),
        grouped=bool(kept.get("group")),
    )
    context = {
        "sandbox": sandbox,
        "may_widen": has_role(user=request.user, team=sandbox.team, role=Role.ADMIN) and sandbox.status != Sandbox.Status.DESTROYED,
        "page": Paginator(rows, DENIALS_PAGE_SIZE).get_page(request.GET.get("page")),
        "grouped": bool(kept.get("group")),
        "query": urlencode(kept),
        "problems": form.problems(),
    }
    return render(request, "sandboxes/_denials.html", context)


def _sandbox_change(request: HttpRequest, pk: int, change, done: str) -> HttpResponse:
    """Carry out `change(sandbox)` (a service call) for a sandbox the user may see, and say
    how it went on the sandbox's page: `done`, or why not."""
    from .. import services

    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    try:
        change(sandbox)
    except InvalidInput as exc:
        messages.error(request, str(exc))  # InvalidInput's text: its problems, joined
    except (services.SandboxError, services.WideningRefused) as exc:  # a refused widening says why, on the page
        messages.error(request, str(exc))
    else:
        messages.info(request, done.format(name=sandbox.name, network=sandbox.get_network_mode_display().lower()))
    return redirect("sandbox_detail", pk=pk)


@require_http_methods(["POST"])
def sandbox_network(request: HttpRequest, pk: int) -> HttpResponse:
    """Change the network mode; a running sandbox is moved at once."""
    from .. import services

    def change(sandbox: Sandbox) -> None:
        services.sandbox_set_network(
            actor=request.user, sandbox=sandbox, mode=request.POST.get("network_mode", ""), source_ip=client_ip(request)
        )

    return _sandbox_change(request, pk, change, "{name}: network is now {network}.")


@require_http_methods(["POST"])
def sandbox_allowlist(request: HttpRequest, pk: int) -> HttpResponse:
    """Change what allowlist mode reaches; in force at once for a running sandbox."""
    from .. import services

    def change(sandbox: Sandbox) -> None:
        services.sandbox_set_allowlist(
            actor=request.user,
            sandbox=sandbox,
            presets=request.POST.getlist("egress_presets"),
            allow=request.POST.get("egress_allow", "")[:20000],
            source_ip=client_ip(request),
        )

    return _sandbox_change(request, pk, change, "{name}: allowlist saved.")


@require_http_methods(["POST"])
def sandbox_allow_refused(request: HttpRequest, pk: int) -> HttpResponse:
    """The card's Allow: a refused name (and port) onto the sandbox's list (team admins; the
    service refuses anyone else with its message)."""
    from .. import services

    port = request.POST.get("port", "").strip()
    added: list[str] = []

    def change(sandbox: Sandbox) -> None:
        if port and not port.isdecimal():
            raise InvalidInput({"port": ["A port is a number from 1 to 65535."]})
        added.append(
            services.sandbox_allow_refused(
                actor=request.user,
                sandbox=sandbox,
                name=request.POST.get("name", "")[:253],
                port=int(port[:5]) if port else None,
                to_team=request.POST.get("list") == "team",
                source_ip=client_ip(request),
            )
        )

    return _sandbox_change(request, pk, change, "{name}: allowed; in force within a second in allowlist mode.")


@require_http_methods(["POST"])
def team_allowlist(request: HttpRequest, slug: str) -> HttpResponse:
    """The team page's allowlist (team admins; the service refuses anyone else)."""
    from .. import services

    team = get_object_or_404(Team, slug=slug, pk__in=team_ids_visible(user=request.user))
    try:
        services.team_set_allowlist(
            actor=request.user, team=team, allow=request.POST.get("egress_allow", "")[:20000], source_ip=client_ip(request)
        )
    except (InvalidInput, services.SandboxError) as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, f"{team}: the team's allowlist is saved; in force within a second in allowlist mode.")
    return redirect("team_detail", slug=slug)


def sandbox_decisions(request: HttpRequest, pk: int) -> HttpResponse:
    """The sandbox's decisions as JSON Lines (sandboxes.decisions): a download, or with follow=1
    the live tail. Whoever sees the sandbox reads them; anyone else gets a 404."""
    from .. import decisions

    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    form = DecisionQueryForm(request.GET)
    if not form.is_valid():
        return HttpResponse("\n".join(form.problems()) + "\n", status=400, content_type="text/plain; charset=utf-8")
    user = request.user

    def still_allowed() -> bool:  # only a follow asks, and the page's download does not follow
        return selectors.sandbox_get_visible(user=user, pk=sandbox.pk) is not None

    return decisions.response(request, sandbox, form.cleaned_data, still_allowed=still_allowed)
