"""ASGI entry point: websockets through Channels. `make run` serves the pages with gunicorn on
PANEL_PORT and runs this (Daphne) on PANEL_WS_PORT for websockets only: there, an HTTP request
gets a 404 (a streamed download served under ASGI would be held in memory whole). Only when both
ports are the same (a single-process set-up, the test suite) does this serve the pages too; an
upload's limit is then kept in front of Django (controlpanel.uploads.UploadLimit).

Every connection, HTTP (static files included) or websocket, first passes the Host check; a
websocket must also come from one of the panel's exact origins (scheme, host and port).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlpanel.settings.base")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.http.request import split_domain_port, validate_host  # noqa: E402

from controlpanel.uploads import UploadLimit  # noqa: E402
from sandboxes.routing import websocket_urlpatterns  # noqa: E402


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value.decode("latin-1")
    return None


class HostCheck:
    """Refuse any connection whose Host header is not one of ALLOWED_HOSTS (DNS rebinding): 400
    for HTTP, a refused handshake for websockets. Django checks the host only for the requests
    its middleware sees; static files and websockets bypass it, so the check lives here."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            domain, _port = split_domain_port(_header(scope, b"host") or "")
            if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
                return await _refuse(scope, receive, send, b"Bad Request: the Host header is not this panel's.")
        return await self.app(scope, receive, send)


class ExactOriginCheck:
    """Accept a websocket only from the panel's own pages: an Origin equal to one of
    PANEL_ORIGINS (scheme, host and port). A missing Origin is refused too."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if _header(scope, b"origin") not in settings.PANEL_ORIGINS:
            return await _refuse(scope, receive, send, b"")
        return await self.app(scope, receive, send)


class SecondFactorCheck:
    """A websocket of a session that has not given its second factor (teams.second_factor) is
    the socket of no one."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        from channels.db import database_sync_to_async
        from django.contrib.auth.models import AnonymousUser

        from teams import second_factor

        user = scope.get("user")
        if user is not None and user.is_authenticated:
            ok = await database_sync_to_async(second_factor.is_satisfied)(user, scope.get("session"))
            if not ok:
                scope = {**scope, "user": AnonymousUser()}
        return await self.app(scope, receive, send)


async def _refuse(scope, receive, send, body: bytes):
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 4403})
        return
    await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def _not_here(scope, receive, send):
    body = f"The panel's pages are served on port {settings.PANEL_PORT}; this port carries its websockets.\n".encode()
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})


pages = UploadLimit(ASGIStaticFilesHandler(django_asgi_app))

application = HostCheck(
    ProtocolTypeRouter(
        {
            "http": pages if settings.PANEL_WS_PORT == settings.PANEL_PORT else _not_here,
            "websocket": ExactOriginCheck(AuthMiddlewareStack(SecondFactorCheck(URLRouter(websocket_urlpatterns)))),
        }
    )
)
