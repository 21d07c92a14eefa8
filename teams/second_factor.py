"""An optional second factor at sign-in: a TOTP code from an authenticator app (django-otp).

A user who has set one up must give a code after the password before any page (or websocket)
answers; a team's admins can require it of every member (Team.require_second_factor), and a
member without one is sent to set it up first. Setting up, removing and failed codes are
audited; django-otp throttles failed codes (each failure doubles the wait).
"""

from collections.abc import Callable
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django_otp import DEVICE_ID_SESSION_KEY, device_classes
from django_otp.models import Device

from .models import Team
from .permissions import request_memberships

# Paths a signed-in user reaches before the second factor: the factor's own pages, signing out,
# static files.
OPEN_PREFIXES = ("/2fa/", "/logout/", "/static/", "/login/")


def required_for(user) -> bool:
    """Whether one of the user's teams requires a second factor."""
    return Team.objects.filter(memberships__user=user, require_second_factor=True).exists()


def missing(user, session, *, required: Callable[[], bool] | None = None) -> str | None:
    """What the user still owes: "setup" (a team requires a factor and there is none), "verify"
    (a factor exists and this session has not given its code), or None.

    Read afresh on every request, never cached across requests: the panel has no cache its
    processes share, and a factor removed, added or required elsewhere must count at once. A
    session that gave its code costs no query more than the device OTPMiddleware loaded; one that
    did not costs one query for "has a confirmed factor", and `required` says whether a team
    requires one, where the caller has read that already (the middleware, from the request's
    memberships, which the page reads its roles from too); without it, one query more."""
    device = _session_device(user, session)
    if device is not None and device.user_id == user.pk and device.confirmed:
        return None
    if _has_confirmed_device(user):
        return "verify"
    return "setup" if (required() if required is not None else required_for(user)) else None


def setup_owed(user) -> bool:
    """missing(user, None) == "setup" (what a request without a session owes, as an API token's):
    a team requires a factor and there is none; read requirement first, as most users have none
    required (one query, not two)."""
    return required_for(user) and not _has_confirmed_device(user)


def _session_device(user, session) -> Device | None:
    """The device this session gave its code for: the one OTPMiddleware loaded for the request
    (`user.otp_device`, checked against the session's device id), else read from the session."""
    device_id = session.get(DEVICE_ID_SESSION_KEY) if session is not None else None
    if not device_id:
        return None
    loaded = getattr(user, "otp_device", None)
    if loaded is not None and loaded.persistent_id == device_id:
        return loaded
    return Device.from_persistent_id(device_id)


def _has_confirmed_device(user) -> bool:
    """A confirmed device of any installed kind: one small query each (as an EXISTS subquery of
    another query, it cost the ORM more to build than a query of its own)."""
    return any(model.objects.devices_for_user(user, confirmed=True).exists() for model in device_classes())


def is_satisfied(user, session) -> bool:
    """Signed in as far as the second factor goes: no factor set up (and none required), or the
    code given in this session for one of the user's confirmed devices."""
    return missing(user, session) is None


class SecondFactorMiddleware:
    """Pages answer a signed-in user only once the second factor is satisfied."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and not request.path.startswith(OPEN_PREFIXES):
            owed = missing(user, request.session, required=lambda: any(r for _team, _role, r in request_memberships(request)))
            if owed == "setup":
                return redirect("second_factor_setup")
            if owed == "verify":
                return redirect(f"/2fa/verify/?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)
