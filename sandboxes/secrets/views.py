"""Secrets, git identity and SSH key pages: a sandbox's own, and a team's secrets. Values go in
and never come out: a page lists names, how each is delivered and when it was last set."""

from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from controlpanel.http import client_ip
from teams.models import Team
from teams.permissions import Role, role_allows, user_role

from . import selectors, vault
from .forms import DenialFilterForm
from .models import Identity, Sandbox, Secret
from .services import InvalidInput
from .services import credentials as svc

DENIALS_PAGE_SIZE = 50


def _problems(exc: InvalidInput) -> str:
    return " ".join(m for msgs in exc.errors.values() for m in msgs)


def _secret_post(request: HttpRequest, *, sandbox: Sandbox | None, team: Team | None) -> None:
    """One change from a secrets form: set (or rotate), enable, disable or delete."""
    op, ip = request.POST.get("op", ""), client_ip(request)
    if op == "set":
        name = request.POST.get("name", "")
        svc.secret_set(
            actor=request.user,
            sandbox=sandbox,
            team=team,
            name=name,
            value=request.POST.get("value", ""),
            delivery=request.POST.get("delivery", Secret.Delivery.ENV),
            source_ip=ip,
        )
        messages.info(request, f"Secret {name.strip()} saved; it is handed over at the next start (Restart a running sandbox).")
        return
    raw = request.POST.get("secret", "")
    secret = Secret.objects.filter(pk=int(raw), sandbox=sandbox, team=team).first() if raw.isdecimal() and len(raw) < 12 else None
    if secret is None:
        raise Http404("No such secret.")
    if op in ("enable", "disable"):
        svc.secret_enable(actor=request.user, secret=secret, enabled=op == "enable", source_ip=ip)
        messages.info(request, f"Secret {secret.name} {op}d; the next start applies it.")
    elif op == "delete":
        svc.secret_delete(actor=request.user, secret=secret, source_ip=ip)
        messages.info(request, f"Secret {secret.name} deleted; the next start applies it.")
    else:
        raise Http404("No such change.")


@sensitive_post_parameters("value")
@require_http_methods(["GET", "POST"])
def sandbox_secrets(request: HttpRequest, pk: int) -> HttpResponse:
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    role = user_role(user=request.user, team=sandbox.team)
    if request.method == "POST":
        if not role_allows(role, Role.OPERATOR):
            raise PermissionDenied("Operators change a sandbox's secrets and identity.")
        op = request.POST.get("op", "")
        try:
            if op == "git":
                svc.git_identity_set(
                    actor=request.user,
                    sandbox=sandbox,
                    name=request.POST.get("git_name", ""),
                    email=request.POST.get("git_email", ""),
                    source_ip=client_ip(request),
                )
                messages.info(request, "Git identity saved; it is written into the home's .gitconfig at the next start.")
            elif op == "ssh":
                svc.ssh_key_regenerate(actor=request.user, sandbox=sandbox, source_ip=client_ip(request))
                messages.info(request, "A new SSH key was made; paste its public half into your forge. The next start hands it over.")
            else:
                _secret_post(request, sandbox=sandbox, team=None)
        except InvalidInput as exc:
            messages.error(request, _problems(exc))
        except vault.VaultError as exc:
            messages.error(request, str(exc))
        return redirect("sandbox_secrets", pk=pk)
    context = {
        "sandbox": sandbox,
        "can_change": role_allows(role, Role.OPERATOR),
        "secrets": Secret.objects.filter(sandbox=sandbox),
        "team_secrets": Secret.objects.filter(team=sandbox.team),
        "identity": Identity.objects.filter(sandbox=sandbox).first(),
        "deliveries": Secret.Delivery.choices,
    }
    return render(request, "credentials/sandbox.html", context)


@sensitive_post_parameters("value")
@require_http_methods(["GET", "POST"])
def team_secrets(request: HttpRequest, slug: str) -> HttpResponse:
    team = Team.objects.filter(slug=slug).first()
    role = user_role(user=request.user, team=team) if team else None
    if team is None or role is None:
        raise Http404("No such team.")
    if request.method == "POST":
        if not role_allows(role, Role.ADMIN):
            raise PermissionDenied("Team admins change the team's secrets.")
        try:
            _secret_post(request, sandbox=None, team=team)
        except InvalidInput as exc:
            messages.error(request, _problems(exc))
        except vault.VaultError as exc:
            messages.error(request, str(exc))
        return redirect("team_secrets", slug=slug)
    context = {
        "team": team,
        "can_change": role_allows(role, Role.ADMIN),
        "secrets": Secret.objects.filter(team=team),
        "deliveries": Secret.Delivery.choices,
    }
    return render(request, "credentials/team.html", context)


@require_http_methods(["GET", "POST"])
def team_checklist(request: HttpRequest, slug: str) -> HttpResponse:
    """The team's manual checklist items: every member sees them, team admins add, change and
    remove them (each audited)."""
    from . import checklist
    from .models import ChecklistItem

    team = Team.objects.filter(slug=slug).first()
    role = user_role(user=request.user, team=team) if team else None
    if team is None or role is None:
        raise Http404("No such team.")
    items = checklist.team_items(team)
    if request.method == "POST":
        if not role_allows(role, Role.ADMIN):
            raise PermissionDenied("Team admins change the team's checklist.")
        item = None
        if request.POST.get("item"):
            item = ChecklistItem.objects.filter(team=team, pk=request.POST["item"]).first() if request.POST["item"].isdigit() else None
            if item is None:
                raise Http404("No such item.")
        try:
            if item is not None and request.POST.get("remove"):
                checklist.item_delete(actor=request.user, team=team, item=item, source_ip=client_ip(request))
                messages.info(request, "Item removed.")
            else:
                checklist.item_save(
                    actor=request.user,
                    team=team,
                    phase=request.POST.get("phase", ""),
                    text=request.POST.get("text", ""),
                    item=item,
                    source_ip=client_ip(request),
                )
                messages.info(request, "Item saved.")
        except InvalidInput as exc:
            messages.error(request, _problems(exc))
        return redirect("team_checklist", slug=slug)
    context = {"team": team, "items": items, "phases": ChecklistItem.Phase.choices, "can_change": role_allows(role, Role.ADMIN)}
    return render(request, "credentials/team_checklist.html", context)


@require_http_methods(["GET", "POST"])
def sandbox_checklist(request: HttpRequest, pk: int) -> HttpResponse:
    """The live security checklist card (loaded by the sandbox's page after it is shown: the
    checks read the disk and Docker). A POST ticks or unticks a manual item."""
    from . import checklist
    from .models import ChecklistItem

    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    role = user_role(user=request.user, team=sandbox.team)
    items = checklist.team_items(sandbox.team)
    if request.method == "POST":
        if not role_allows(role, Role.OPERATOR):
            raise PermissionDenied("Operators tick a sandbox's checklist.")
        raw = request.POST.get("item", "")
        item = ChecklistItem.objects.filter(pk=int(raw), team=sandbox.team).first() if raw.isdecimal() and len(raw) < 12 else None
        if item is None:
            raise Http404("No such item.")
        checklist.tick(
            actor=request.user, sandbox=sandbox, item=item, ticked=request.POST.get("ticked") == "1", source_ip=client_ip(request)
        )
    ticked = set(sandbox.checklist_ticks.values_list("item_id", flat=True))
    phases = [(label, [(item, item.pk in ticked) for item in items if item.phase == value]) for value, label in ChecklistItem.Phase.choices]
    context = {
        "sandbox": sandbox,
        "checks": checklist.run_checks(sandbox),
        "phases": phases,
        "can_tick": role_allows(role, Role.OPERATOR),
    }
    return render(request, "sandboxes/_checklist.html", context)


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
        "page": Paginator(rows, DENIALS_PAGE_SIZE).get_page(request.GET.get("page")),
        "grouped": bool(kept.get("group")),
        "query": urlencode(kept),
        "problems": form.problems(),
    }
    return render(request, "sandboxes/_denials.html", context)


def _sandbox_change(request: HttpRequest, pk: int, change, done: str) -> HttpResponse:
    """Carry out `change(sandbox)` (a service call) for a sandbox the user may see, and say
    how it went on the sandbox's page: `done`, or why not."""
    from . import services

    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    try:
        change(sandbox)
    except InvalidInput as exc:
        messages.error(request, _problems(exc))
    except services.SandboxError as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, done.format(name=sandbox.name, network=sandbox.get_network_mode_display().lower()))
    return redirect("sandbox_detail", pk=pk)


@require_http_methods(["POST"])
def sandbox_network(request: HttpRequest, pk: int) -> HttpResponse:
    """Change the network mode; a running sandbox is moved at once."""
    from . import services

    def change(sandbox: Sandbox) -> None:
        services.sandbox_set_network(
            actor=request.user, sandbox=sandbox, mode=request.POST.get("network_mode", ""), source_ip=client_ip(request)
        )

    return _sandbox_change(request, pk, change, "{name}: network is now {network}.")


@require_http_methods(["POST"])
def sandbox_allowlist(request: HttpRequest, pk: int) -> HttpResponse:
    """Change what allowlist mode reaches; in force at once for a running sandbox."""
    from . import services

    def change(sandbox: Sandbox) -> None:
        services.sandbox_set_allowlist(
            actor=request.user,
            sandbox=sandbox,
            presets=request.POST.getlist("egress_presets"),
            allow=request.POST.get("egress_allow", "")[:20000],
            source_ip=client_ip(request),
        )

    return _sandbox_change(request, pk, change, "{name}: allowlist saved.")
