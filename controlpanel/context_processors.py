"""What every page shows, whatever view renders it: the health banners (Docker, Redis, the
audit chain) and where the page's websockets connect."""

from django.conf import settings
from django.http import HttpRequest
from django.http.request import split_domain_port

from audit.selectors import audit_chain_problem
from sandboxes import health
from teams.permissions import Role, request_roles


def panel(request: HttpRequest) -> dict:
    context: dict = {**health.snapshot(), "ws_base": _ws_base(request)}
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and (user.is_superuser or Role.ADMIN in request_roles(request).values()):
        problem = audit_chain_problem()
        # The problem names an event, which may be another team's: its text is for superusers.
        if problem and not user.is_superuser:
            problem = "A superuser can see which event and how."
        context["audit_chain_problem"] = problem
    return context


def _ws_base(request: HttpRequest) -> str:
    """Websockets are served on PANEL_WS_PORT; "" when that is the pages' own port."""
    if settings.PANEL_WS_PORT == settings.PANEL_PORT:
        return ""
    host, _port = split_domain_port(request.get_host())
    return f"ws://{host or '127.0.0.1'}:{settings.PANEL_WS_PORT}"
