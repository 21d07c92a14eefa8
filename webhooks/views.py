"""The team's webhooks page (team admins only): list, add, disable, delete, rotate the secret
(shown once), allow private addresses, see the newest deliveries and redeliver one. Every
change goes through webhooks.services, which authorizes and audits it again."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from controlpanel.http import client_ip
from sandboxes.secrets import vault
from sandboxes.services import InvalidInput
from teams.models import Team
from teams.permissions import Role, user_role

from . import selectors, services
from .forms import WebhookForm
from .models import Delivery, Webhook


def _team_as_admin(request: HttpRequest, slug: str) -> Team:
    """The team, for its admins; 404 for non-members, 403 for its operators and viewers."""
    team = Team.objects.filter(slug=slug).first()
    role = user_role(user=request.user, team=team) if team else None
    if team is None or role is None:
        raise Http404("No such team.")
    if role != Role.ADMIN:
        raise PermissionDenied("Only the team's admins manage its webhooks.")
    return team


def _page(request: HttpRequest, team: Team, form: WebhookForm, new: services.NewSecret | None = None, status: int = 200) -> HttpResponse:
    if not request.user.is_superuser:
        form.fields["allow_private"].disabled = True  # superusers only (webhooks.services)
        form.fields["allow_private"].help_text += " Only the panel's administrators (superusers) may tick it."
    context = {"team": team, "form": form, "rows": selectors.webhooks_of(team), "new": new}
    response = render(request, "webhooks/team.html", context, status=status)
    if new is not None:
        response["Cache-Control"] = "no-store"  # the one page that holds the secret is never cached
    return response


@require_http_methods(["GET", "POST"])
def team_webhooks(request: HttpRequest, slug: str) -> HttpResponse:
    """GET: the page. POST: add a webhook; the page shows its secret this once."""
    team = _team_as_admin(request, slug)
    if request.method == "GET":
        return _page(request, team, WebhookForm())
    form = WebhookForm(request.POST)
    if form.is_valid():
        try:
            new = services.webhook_create(
                actor=request.user,
                team=team,
                url=form.cleaned_data["url"],
                chosen_events=form.cleaned_data["events"],
                allow_private=form.cleaned_data["allow_private"],
                source_ip=client_ip(request),
            )
        except InvalidInput as exc:
            for field, problems in exc.errors.items():
                form.add_error(field if field in form.fields else None, problems)
        except PermissionDenied as exc:  # a private address, allowed by a team admin who is no superuser
            form.add_error("allow_private", str(exc))
            return _page(request, team, form, status=403)
        except vault.VaultError as exc:
            form.add_error(None, str(exc))
        else:
            return _page(request, team, WebhookForm(), new=new)
    return _page(request, team, form, status=400)


def _webhook(team: Team, pk: int) -> Webhook:
    webhook = Webhook.objects.filter(pk=pk, team=team).select_related("team").first()
    if webhook is None:
        raise Http404("No such webhook.")
    return webhook


@require_POST
def webhook_change(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """One change to a webhook: enable, disable, allow or forbid private addresses, rotate the
    secret (the page shows the new one once), delete."""
    team = _team_as_admin(request, slug)
    webhook, op, ip = _webhook(team, pk), request.POST.get("op", ""), client_ip(request)
    if op in ("enable", "disable"):
        services.webhook_set_enabled(actor=request.user, webhook=webhook, enabled=op == "enable", source_ip=ip)
        messages.info(request, f"Webhook {webhook.pk} {op}d.")
    elif op in ("allow_private", "forbid_private"):
        services.webhook_set_allow_private(actor=request.user, webhook=webhook, allow=op == "allow_private", source_ip=ip)
        messages.info(request, f"Webhook {webhook.pk}: private addresses {'allowed' if op == 'allow_private' else 'refused'}.")
    elif op == "rotate":
        try:
            new = services.webhook_rotate_secret(actor=request.user, webhook=webhook, source_ip=ip)
        except vault.VaultError as exc:
            messages.error(request, str(exc))
        else:
            return _page(request, team, WebhookForm(), new=new)
    elif op == "delete":
        services.webhook_delete(actor=request.user, webhook=webhook, source_ip=ip)
        messages.info(request, f"Webhook {pk} deleted.")
    else:
        raise Http404("No such change.")
    return redirect("team_webhooks", slug=slug)


@require_POST
def delivery_redeliver(request: HttpRequest, slug: str, pk: int, delivery_pk: int) -> HttpResponse:
    team = _team_as_admin(request, slug)
    delivery = Delivery.objects.filter(pk=delivery_pk, webhook=_webhook(team, pk)).select_related("webhook__team").first()
    if delivery is None:
        raise Http404("No such delivery.")
    try:
        again = services.delivery_redeliver(actor=request.user, delivery=delivery, source_ip=client_ip(request))
    except InvalidInput as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, f"Delivery {delivery.pk} is sent again as delivery {again.pk}.")
    return redirect("team_webhooks", slug=slug)
