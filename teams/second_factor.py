"""An optional second factor at sign-in: a TOTP code from an authenticator app (django-otp).

A user who has set one up must give a code after the password before any page (or websocket)
answers; a team's admins can require it of every member (Team.require_second_factor), and a
member without one is sent to set it up first. Setting up, removing and failed codes are
audited; django-otp throttles failed codes (each failure doubles the wait).
"""

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django_otp import DEVICE_ID_SESSION_KEY, user_has_device
from django_otp.models import Device

from .models import Team

# Paths a signed-in user reaches before the second factor: the factor's own pages, signing out,
# static files.
OPEN_PREFIXES = ("/2fa/", "/logout/", "/static/", "/login/")


def required_for(user) -> bool:
    """Whether one of the user's teams requires a second factor."""
    return Team.objects.filter(memberships__user=user, require_second_factor=True).exists()


def missing(user, session) -> str | None:
    """What the user still owes: "setup" (a team requires a factor and there is none), "verify"
    (a factor exists and this session has not given its code), or None."""
    device_id = session.get(DEVICE_ID_SESSION_KEY) if session is not None else None
    if device_id:
        device = Device.from_persistent_id(device_id)
        if device is not None and device.user_id == user.pk and device.confirmed:
            return None
    if user_has_device(user, confirmed=True):
        return "verify"
    return "setup" if required_for(user) else None


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
            owed = missing(user, request.session)
            if owed == "setup":
                return redirect("second_factor_setup")
            if owed == "verify":
                return redirect(f"/2fa/verify/?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)
