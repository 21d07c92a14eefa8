"""Who may still watch: the checks every socket runs when it connects and again on every message.

On each message a socket is about to send (a log batch, a stats tick, terminal output) or
receives (a keystroke), it reads again whether its user is still active and their role in the
sandbox's team still enough (`role_now`, two small queries): a viewer removed from the team
is refused the very next message, whatever the timing. The fuller check (the sign-in session,
the sandbox itself) is kept for at most a second; a change of membership or of the user
(signals below) and a logout also tell the user's sockets at once.
"""

import time
from dataclasses import dataclass
from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils.crypto import constant_time_compare

from teams.models import Membership
from teams.permissions import Role, role_allows

from ..models import Sandbox

SessionStore = import_module(settings.SESSION_ENGINE).SessionStore
RECHECK_SECONDS = 1.0
ACCESS_CHANGED = "access.changed"  # message type sent to a user's sockets


def session_is_valid(session_key: str, user) -> bool:
    """The sign-in session still exists, has not expired, and is this user's with their current
    password (what Django checks for a page)."""
    data = SessionStore(session_key).load() if session_key else {}
    stored = data.get(HASH_SESSION_KEY) or ""
    return str(data.get(SESSION_KEY)) == str(user.pk) and constant_time_compare(stored, user.get_session_auth_hash())


def role_in(user, team_id: int) -> str | None:
    if user.is_superuser:
        return Role.ADMIN
    return Membership.objects.filter(user_id=user.pk, team_id=team_id).values_list("role", flat=True).first()


@dataclass
class Grant:
    """What a socket was allowed at its last check."""

    sandbox: Sandbox
    role: str
    checked_at: float


def check(*, user_id: int, session_key: str, sandbox_id: int, needed: str) -> Grant | None:
    """The sandbox and the user's role, if the user may still see it with at least `needed`."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None or not session_is_valid(session_key, user):
        return None
    # With its host: the sockets ask for its engine (engine.host_for) from async code, no query then.
    sandbox = Sandbox.objects.select_related("host").filter(pk=sandbox_id).exclude(status=Sandbox.Status.DESTROYED).first()
    if sandbox is None:
        return None
    role = role_in(user, sandbox.team_id)
    if not role_allows(role, needed):
        return None
    return Grant(sandbox=sandbox, role=role or "", checked_at=time.monotonic())


def refusal(*, user_id: int, session_key: str, sandbox_id: int, needed: str) -> str:
    """Why a socket refused now (after `check` or `still_allowed` said no), in words for the
    record: a terminal session's end reason says what ended it."""
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None or not user.is_active:
        return "the user was deleted" if user is None else "the user was deactivated"
    if not session_is_valid(session_key, user):
        return "the user's sign-in session ended"
    sandbox = Sandbox.objects.filter(pk=sandbox_id).exclude(status=Sandbox.Status.DESTROYED).first()
    if sandbox is None:
        return "the sandbox was destroyed"
    role = role_in(user, sandbox.team_id)
    if role is None:
        return "the user was removed from the team"
    if not role_allows(role, needed):
        return f"the user's role in the team is now {role}"
    return "the user's access changed"  # and changed back since: the socket was refused all the same


def session_still_valid(*, user_id: int, session_key: str) -> bool:
    """Whether the user is active and this sign-in session still theirs (a password change gives
    the session a new key: the old one is no longer valid)."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    return user is not None and session_is_valid(session_key, user)


def role_now(*, user_id: int, team_id: int) -> str | None:
    """The user's role in the team at this moment, or None (gone, inactive, not a member)."""
    superuser = get_user_model().objects.filter(pk=user_id, is_active=True).values_list("is_superuser", flat=True).first()
    if superuser is None:
        return None
    if superuser:
        return Role.ADMIN
    return Membership.objects.filter(user_id=user_id, team_id=team_id).values_list("role", flat=True).first()


def still_allowed(grant: Grant, *, user_id: int, needed: str) -> bool:
    return role_allows(role_now(user_id=user_id, team_id=grant.sandbox.team_id), needed)


def is_fresh(grant: Grant | None) -> bool:
    return grant is not None and time.monotonic() - grant.checked_at < RECHECK_SECONDS


def _tell(user_id: int) -> None:
    """Tell the user's sockets, once the change is committed (before, they would read the old
    state and keep it for a second)."""
    from . import _send, user_group

    transaction.on_commit(lambda: _send(user_group(user_id), {"type": ACCESS_CHANGED}))


@receiver(post_save, sender=Membership)
@receiver(post_delete, sender=Membership)
def membership_changed(sender, instance, **kwargs):
    """Whatever changed a membership (the team page, the admin, a script), that user's sockets
    check again before their next message."""
    _tell(instance.user_id)


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def user_changed(sender, instance, created=False, **kwargs):
    if not created:
        _tell(instance.pk)
