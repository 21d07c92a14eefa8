"""Sign-ins, sign-outs and lock-outs are audit events too. Django and django-axes announce them
only through these signals."""

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from controlpanel.http import client_ip

from .services import audit_record


@receiver(user_logged_in)
def on_login(sender, request, user, **kwargs):
    audit_record(actor=user, action="auth.login", target=user.get_username(), source_ip=client_ip(request))


@receiver(user_logged_out)
def on_logout(sender, request, user, **kwargs):
    if user is not None:
        audit_record(actor=user, action="auth.logout", target=user.get_username(), source_ip=client_ip(request))


@receiver(user_login_failed)
def on_login_failed(sender, credentials, request=None, **kwargs):
    name = str(credentials.get("username", ""))[:150]
    audit_record(actor=None, actor_name="anonymous", action="auth.login_failed", target=name, source_ip=client_ip(request))


@receiver(user_locked_out)
def on_locked_out(sender, request=None, username=None, ip_address=None, **kwargs):
    audit_record(
        actor=None,
        actor_name="anonymous",
        action="auth.locked_out",
        target=str(username or "")[:150],
        source_ip=ip_address or client_ip(request),
        details={"reason": "too many failed sign-ins"},
    )
