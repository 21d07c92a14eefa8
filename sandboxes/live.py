"""The one path for live updates: services call `sandbox_changed`, consumers re-render.

Messages carry only ids; each consumer re-reads through the selectors with its own user, so a
message never shows anyone a sandbox they may not see.
"""

import hashlib
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.dispatch import receiver

log = logging.getLogger(__name__)
GROUP = "sandboxes"


def session_group(session_key: str) -> str:
    """The group of every socket a sign-in session opened (named by a hash, not the key itself)."""
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def sandbox_changed(sandbox_id: int) -> None:
    """Tell every open page that `sandbox_id` changed, once the current transaction commits."""
    transaction.on_commit(lambda: _send(GROUP, {"type": "sandbox.changed", "sandbox_id": sandbox_id}))


@receiver(user_logged_out)
def close_session_sockets(sender, request, user, **kwargs):
    """Logging out closes the websockets that session opened, in every tab."""
    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        _send(session_group(key), {"type": "session.ended"})


def _send(group: str, message: dict) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(group, message)
    except Exception:  # noqa: BLE001 - a missed live update must never fail the action itself
        log.warning("live update not sent (is Redis running?)", exc_info=True)
