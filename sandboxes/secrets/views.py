"""Secrets, git identity and SSH key pages: a sandbox's own, and a team's secrets. Values go in
and never come out: a page lists names, how each is delivered and when it was last set."""

from collections.abc import Callable

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from controlpanel.http import client_ip
from teams.models import Team
from teams.permissions import Role, role_allows, user_role

from .. import selectors
from ..models import Identity, Sandbox, Secret
from ..services import InvalidInput
from . import credentials as svc
from . import vault


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
            hosts=request.POST.get("hosts", ""),
            header=request.POST.get("header", ""),
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


def _sandbox_post(request: HttpRequest, sandbox: Sandbox) -> None:
    """One change from a sandbox's page: its git identity, a new SSH key, or one of its secrets."""
    op = request.POST.get("op", "")
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


def _post(request: HttpRequest, change: Callable[[], None]) -> None:
    """Make the change a page posted; what refuses it (its input, the vault) becomes the message."""
    try:
        change()
    except InvalidInput as exc:
        messages.error(request, _problems(exc))
    except vault.VaultError as exc:
        messages.error(request, str(exc))


@sensitive_post_parameters("value")
@require_http_methods(["GET", "POST"])
def sandbox_secrets(request: HttpRequest, pk: int) -> HttpResponse:
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    role = user_role(user=request.user, team=sandbox.team)
    if request.method == "POST":
        if not role_allows(role, Role.OPERATOR):
            raise PermissionDenied("Operators change a sandbox's secrets and identity.")
        _post(request, lambda: _sandbox_post(request, sandbox))
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
        _post(request, lambda: _secret_post(request, sandbox=None, team=team))
        return redirect("team_secrets", slug=slug)
    context = {
        "team": team,
        "can_change": role_allows(role, Role.ADMIN),
        "secrets": Secret.objects.filter(team=team),
        "deliveries": Secret.Delivery.choices,
    }
    return render(request, "credentials/team.html", context)
