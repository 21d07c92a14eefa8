"""Second-factor pages: set up a TOTP authenticator, give a code after the password, remove it."""

import base64
from urllib.parse import quote

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login
from django_otp import user_has_device
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.services import audit_record
from controlpanel.http import client_ip

from . import second_factor


def _audit(request: HttpRequest, action: str, details: dict | None = None) -> None:
    audit_record(actor=request.user, action=action, target=request.user.get_username(), details=details, source_ip=client_ip(request))


def _next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or "/"
    return target if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}) and target.startswith("/") else "/"


@require_http_methods(["GET", "POST"])
def setup(request: HttpRequest) -> HttpResponse:
    """Make an (unconfirmed) authenticator key, show it, and confirm it with a first code. A user
    who has one already must have given its code in this session: a password alone never
    replaces the authenticator."""
    if user_has_device(request.user, confirmed=True) and not second_factor.is_satisfied(request.user, request.session):
        return redirect(f"/2fa/verify/?next={request.path}")
    TOTPDevice.objects.filter(user=request.user, confirmed=False).exclude(name="pending").delete()
    device, _ = TOTPDevice.objects.get_or_create(user=request.user, confirmed=False, name="pending")
    if request.method == "POST":
        if device.verify_token((request.POST.get("token") or "").strip().replace(" ", "")):
            TOTPDevice.objects.filter(user=request.user, confirmed=True).delete()  # one authenticator per user
            device.confirmed, device.name = True, "authenticator"
            device.save(update_fields=["confirmed", "name"])
            otp_login(request, device)
            _audit(request, "auth.second_factor_enabled")
            messages.info(request, "The second factor is on: each sign-in now asks for a code.")
            return redirect("dashboard")
        _audit(request, "auth.second_factor_failed", {"during": "setup"})
        messages.error(request, "That code does not match; check the time on your phone and try the next one.")
    secret = base64.b32encode(device.bin_key).decode()
    label = quote(f"ccpanel:{request.user.get_username()}")
    uri = f"otpauth://totp/{label}?secret={secret}&issuer=ccpanel&digits={device.digits}&period={device.step}"
    context = {
        "has_device": user_has_device(request.user, confirmed=True),
        "secret": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        "uri": uri,
        "required": second_factor.required_for(request.user),
    }
    return render(request, "registration/second_factor_setup.html", context)


@require_http_methods(["GET", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    devices = list(TOTPDevice.objects.devices_for_user(request.user, confirmed=True))
    if not devices:
        return redirect("second_factor_setup" if second_factor.required_for(request.user) else "dashboard")
    if request.method == "POST":
        device = devices[0]
        allowed, _ = device.verify_is_allowed()
        token = (request.POST.get("token") or "").strip().replace(" ", "")
        if allowed and device.verify_token(token):
            otp_login(request, device)
            return redirect(_next(request))
        _audit(request, "auth.second_factor_failed", {"during": "sign-in", "throttled": not allowed})
        messages.error(request, "That code does not match." if allowed else "Too many wrong codes: wait a little, then try again.")
    return render(request, "registration/second_factor_verify.html", {"next": _next(request)})


@require_http_methods(["POST"])
def remove(request: HttpRequest) -> HttpResponse:
    if not second_factor.is_satisfied(request.user, request.session):
        return redirect("second_factor_verify")
    if second_factor.required_for(request.user):
        messages.error(request, "One of your teams requires a second factor; it cannot be removed.")
        return redirect("dashboard")
    if TOTPDevice.objects.filter(user=request.user).delete()[0]:
        _audit(request, "auth.second_factor_removed")
        messages.info(request, "The second factor is off.")
    return redirect("dashboard")
