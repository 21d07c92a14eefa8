"""What a browser on the panel's page sends."""

from django.conf import settings


def ws_headers(cookie: str) -> list[tuple[bytes, bytes]]:
    """The websocket handshake headers of a browser on the panel's page, signed in with the
    session `cookie`."""
    return [
        (b"host", b"127.0.0.1:8000"),
        (b"origin", f"http://127.0.0.1:{settings.PANEL_PORT}".encode()),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
    ]
