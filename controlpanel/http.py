"""What the panel reads from a request besides its form: the address it came from."""

from django.http import HttpRequest


def client_ip(request: HttpRequest | None) -> str | None:
    """The address an audited action came from, as the audit trail records it: the peer's
    REMOTE_ADDR (the panel listens on loopback with no proxy in front, so no forwarding headers
    are believed), or None when there is no request (a signal sent outside one) or no address."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None
