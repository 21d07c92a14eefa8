"""Live updates: typed broadcasts to groups, and the websocket consumers that render them.

One sender: services call `sandbox_changed(sandbox)` when a sandbox's row changes. The message
goes, once the transaction commits, to two groups: `team.<team id>` (dashboards of people who
can see that team) and `sandbox.<pk>` (that sandbox's page). It carries only ids and a kind;
each consumer re-reads that one sandbox with its own user's permissions and re-renders that one
row or panel, so the work per event does not grow with the number of sandboxes.

Streams (logs, stats, terminal) are read from the engine per socket and never pass through here.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.dispatch import receiver

log = logging.getLogger(__name__)
STATUS = "sandbox.status"  # the message type; consumers handle it in sandbox_status()


def team_group(team_id: int) -> str:
    return f"team.{team_id}"


def sandbox_group(sandbox_id: int) -> str:
    return f"sandbox.{sandbox_id}"


def user_group(user_id: int) -> str:
    """The group of every socket a user opened, in any session."""
    return f"user.{user_id}"


def sandbox_changed(sandbox, *, created: bool = False) -> None:
    """Tell the open pages that `sandbox` changed (or was just created), once the current
    transaction commits."""
    message = {"type": STATUS, "sandbox_id": sandbox.pk, "team_id": sandbox.team_id, "created": created}

    transaction.on_commit(lambda: _send(team_group(sandbox.team_id), message, sandbox_group(sandbox.pk)))


@receiver(user_logged_out)
def close_session_sockets(sender, request, user, **kwargs):
    """Logging out closes the websockets that session opened, in every tab; the user's sockets
    of other sessions (another browser) are told which session ended and stay open. Each socket
    also checks its session on every message (see consumers), which covers a session that ends
    otherwise."""
    if user is not None:
        _send(user_group(user.pk), {"type": "session.ended", "session": getattr(request.session, "session_key", None) if request else None})


def _send(group: str, message: dict, *more: str) -> None:
    """Send `message` to `group` (and to the `more` groups), in one async_to_sync call: each
    call runs a new event loop, and the channel layer opens a Redis connection per loop."""

    async def send() -> None:
        layer = get_channel_layer()
        for name in (group, *more):
            try:
                await layer.group_send(name, message)
            except Exception:  # a missed live update must never fail the action itself
                log.warning("live update to %s not sent (is Redis running?)", name, exc_info=True)

    try:
        async_to_sync(send)()
    except Exception:  # nor may the loop that sends it
        log.warning("live update not sent (is Redis running?)", exc_info=True)
