"""The live views of one sandbox share this: the socket every view is (SandboxStream), the cap
on live sockets per user, and the checks of what a page sends. The views themselves are
logs.py (its log), stats.py (its resource use and processes) and terminal.py (a shell).

Each socket reads from the engine for itself (never through the status broadcasts), and checks
its user's right to see the sandbox when it connects and before every message it sends or
takes (sandboxes.live.access). What it sends is data, JSON or raw terminal bytes; the page shows
it as text, never as HTML.
"""

import contextlib
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from teams.permissions import Role

from .. import live
from ..models import Sandbox
from . import access

log = logging.getLogger(__name__)
CLOSE_UNAUTHORISED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TRY_LATER = 1013
CLOSE_TOO_MANY = 4408
MAX_SOCKETS_PER_USER = 64


class _LiveSockets:
    """How many live sockets each user has open in this process: past MAX_SOCKETS_PER_USER a new
    one is refused (each holds a thread and a Docker connection)."""

    def __init__(self):
        self.by_user: dict[int, set] = {}

    def join(self, socket, user_id: int) -> bool:
        mine = self.by_user.setdefault(user_id, set())
        if len(mine) >= MAX_SOCKETS_PER_USER:
            return False
        mine.add(socket)
        socket.counted_for = user_id
        return True

    async def leave(self, socket) -> None:
        user_id = getattr(socket, "counted_for", None)
        if user_id is not None:
            self.by_user.get(user_id, set()).discard(socket)


live_sockets = _LiveSockets()


def parse_message(text: str | None) -> dict:
    """A client's JSON message as a dict, or {} for anything else (not JSON, not an object,
    nested too deep): what the client sends is never trusted to be well formed."""
    try:
        value = json.loads(text or "{}")
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def whole_number(value, *, low: int, high: int) -> int | None:
    """`value` if it is a whole number (not a float, not a boolean) within [low, high]."""
    return value if type(value) is int and low <= value <= high else None


def hand_over(loop, callback, item) -> bool:
    """From a reader thread to the socket's event loop; False once that loop is gone."""
    try:
        loop.call_soon_threadsafe(callback, item)
        return True
    except RuntimeError:  # the loop closed: nobody is listening any more
        return False


class SandboxStream(AsyncWebsocketConsumer):
    """What every live view of one sandbox does: authorise, join the groups that may end it,
    and check again before each message."""

    needed_role = Role.VIEWER

    async def dispatch(self, message):
        """Any failure in a handler (a malformed message, a bug) ends this socket cleanly: what
        it streams is stopped and its shell hung up, and the socket closes with 1011. Left to
        the server, the connection would close without the clean-up ever running."""
        try:
            await super().dispatch(message)
        except StopConsumer:
            raise
        except Exception:
            log.exception("live socket %s failed; closing it", type(self).__name__)
            self.end_reason = getattr(self, "end_reason", "") or "the panel failed (see its log)"
            await self._release()
            with contextlib.suppress(Exception):  # the socket may be gone already
                await self.close(code=1011)

    async def _release(self) -> None:
        """Stop streaming, once, however the socket ends."""
        self.closed = True
        if getattr(self, "released", False):
            return
        self.released = True
        await live_sockets.leave(self)
        await self.stopped()

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHORISED)
            return
        if not live_sockets.join(self, user.pk):
            await self.close(code=CLOSE_TOO_MANY)
            return
        self.user_id = user.pk
        self.session_key = self.scope["session"].session_key or ""
        self.sandbox_id = int(self.scope["url_route"]["kwargs"]["pk"])
        self.grant: access.Grant | None = None
        self.closed = False
        self.end_reason = ""  # what ended the socket, once known (the first cause wins)
        if not await self.allowed(force=True):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.groups_joined = [live.user_group(self.user_id), live.sandbox_group(self.sandbox_id)]
        try:
            for group in self.groups_joined:
                await self.channel_layer.group_add(group, self.channel_name)
        except Exception:  # noqa: BLE001 - Redis is down: the page's socket retries
            await self.close(code=CLOSE_TRY_LATER)
            return
        await self.accept()
        await self.started()

    async def disconnect(self, code):
        self.closed = True
        if not getattr(self, "end_reason", ""):  # not closed by this side: the page went
            self.end_reason = "the page closed" if code in (None, 1000, 1001) else f"the connection was lost (code {code})"
        for group in getattr(self, "groups_joined", []):
            with contextlib.suppress(Exception):  # Redis away: the group expires by itself
                await self.channel_layer.group_discard(group, self.channel_name)
        await self._release()

    async def started(self) -> None:
        """The socket was accepted: start streaming."""

    async def stopped(self) -> None:
        """The socket closed: stop whatever streams."""

    async def allowed(self, *, force: bool = False) -> bool:
        """Whether the user may still see this sandbox: their role is read again every time, the
        rest (session, sandbox) at most once a second and at once after their access changed.
        Closes the socket if not."""
        if force or not access.is_fresh(self.grant):
            self.grant = await database_sync_to_async(access.check)(
                user_id=self.user_id, session_key=self.session_key, sandbox_id=self.sandbox_id, needed=self.needed_role
            )
        elif self.grant is not None and not await database_sync_to_async(access.still_allowed)(
            self.grant, user_id=self.user_id, needed=self.needed_role
        ):
            self.grant = None
        if self.grant is None and not self.closed and hasattr(self, "groups_joined"):
            reason = await database_sync_to_async(access.refusal)(
                user_id=self.user_id, session_key=self.session_key, sandbox_id=self.sandbox_id, needed=self.needed_role
            )
            await self.end_socket(CLOSE_FORBIDDEN, reason)
        return self.grant is not None

    async def end_socket(self, code: int, reason: str) -> None:
        """Close from this side, and stop streaming now (a shell is hung up at once), whether
        or not the page ever answers the close. `reason` is what is recorded (the first one)."""
        self.end_reason = self.end_reason or reason
        self.closed = True
        await self._release()
        await self.close(code=code)

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox as of the last check (only read after a check that passed)."""
        if self.grant is None:
            raise RuntimeError(f"{type(self).__name__} read its sandbox without a check that passed.")
        return self.grant.sandbox

    async def access_changed(self, event):
        self.grant = None
        await self.allowed(force=True)

    async def session_ended(self, event):
        """A sign-out: the sockets of that session close for good; those of the user's other
        sessions stay open while their own session is still valid."""
        if event.get("session") not in (None, self.session_key) and await database_sync_to_async(access.session_still_valid)(
            user_id=self.user_id, session_key=self.session_key
        ):
            return
        await self.end_socket(CLOSE_UNAUTHORISED, "the user signed out")

    async def sandbox_status(self, event):
        """A status change of this sandbox (the status broadcasts also reach this group)."""
        if await self.allowed(force=True):
            await self.status_changed(self.sandbox)

    async def status_changed(self, sandbox: Sandbox) -> None:
        pass

    async def send_json(self, payload: dict[str, Any]) -> int:
        text = json.dumps(payload, separators=(",", ":"))
        await self.send(text_data=text)
        return len(text)
