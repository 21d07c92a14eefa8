"""The user's own API tokens page: make one (shown once), see them, revoke one."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from controlpanel.http import client_ip
from sandboxes.services import InvalidInput
from teams import second_factor

from . import services
from .forms import TokenCreateForm


def _page(request: HttpRequest, form: TokenCreateForm, new: services.NewToken | None = None, status: int = 200) -> HttpResponse:
    context = {"form": form, "tokens": services.tokens_of(user=request.user), "new": new}
    return render(request, "api/tokens.html", context, status=status)


@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """GET: the page. POST: make a token; the page shows it this once (it is never stored)."""
    if request.method == "GET":
        return _page(request, TokenCreateForm())
    # The second-factor middleware already stands before every page; said again here because a
    # token outlives the session: one must never be made by a session that owes its code.
    if owed := second_factor.missing(request.user, request.session):
        return redirect("second_factor_setup" if owed == "setup" else f"/2fa/verify/?next={request.path}")
    form = TokenCreateForm(request.POST)
    if form.is_valid():
        try:
            new = services.api_token_create(actor=request.user, source_ip=client_ip(request), **form.cleaned_data)
        except InvalidInput as exc:
            for field, problems in exc.errors.items():
                form.add_error(field if field in form.fields else None, problems)
        else:
            response = _page(request, TokenCreateForm(), new=new)
            response["Cache-Control"] = "no-store"  # the one page that holds the secret is never cached
            return response
    return _page(request, form, status=400)


@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = services.api_token_revoke(actor=request.user, token_id=pk, source_ip=client_ip(request))
    if token is None:
        messages.error(request, "No such token of yours, or it was revoked already.")
    else:
        messages.info(request, f"Token {token.prefix} ({token.name}) is revoked: it no longer authenticates.")
    return redirect("api_tokens")
