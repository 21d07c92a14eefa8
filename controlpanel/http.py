"""What the panel reads from a request besides its form: the address it came from, and whether
its client is still there (for a streamed answer)."""

import select
import socket

from django.http import HttpRequest


def client_ip(request: HttpRequest | None) -> str | None:
    """The address an audited action came from, as the audit trail records it: the peer's
    REMOTE_ADDR (the panel listens on loopback with no proxy in front, so no forwarding headers
    are believed), or None when there is no request (a signal sent outside one) or no address."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def client_gone(client) -> bool:
    """Whether the client closed its connection: `client` is the socket gunicorn hands in the
    environ (`gunicorn.socket`); other servers hand none, and then only a streamed answer's own
    deadline ends it while it is quiet (Daphne cancels it when the client goes)."""
    if not isinstance(client, socket.socket):
        return False
    try:
        readable, _, _ = select.select([client], [], [], 0)
        return bool(readable) and client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True
