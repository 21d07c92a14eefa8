"""The one path for live updates: services call `sandbox_changed`, consumers re-render.

Messages carry only ids; each consumer re-reads through the selectors with its own user, so a
message never shows anyone a sandbox they may not see.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)
GROUP = "sandboxes"


def sandbox_changed(sandbox_id: int) -> None:
    """Tell every open page that `sandbox_id` changed, once the current transaction commits."""
    transaction.on_commit(lambda: _send({"type": "sandbox.changed", "sandbox_id": sandbox_id}))


def _send(message: dict) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(GROUP, message)
    except Exception:  # noqa: BLE001 - a missed live update must never fail the action itself
        log.warning("live update not sent (is Redis running?)", exc_info=True)
