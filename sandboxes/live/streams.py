"""The live views of one sandbox: its log, its resource use and processes, and a terminal.

Each socket reads from the engine for itself (never through the status broadcasts), and checks
its user's right to see the sandbox when it connects and before every message it sends or
takes (sandboxes.live.access). What it sends is data, JSON or raw terminal bytes; the page shows
it as text, never as HTML.
"""

import asyncio
import collections
import dataclasses
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model

from teams.permissions import Role

from .. import engine, live
from ..models import Sandbox
from ..services import terminals
from . import access
from .stats import collector_for

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
            try:
                await self.close(code=1011)
            except Exception:  # noqa: BLE001 - the socket may be gone already
                pass

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
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:  # noqa: BLE001 - the group expires by itself
                pass
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
        assert self.grant is not None
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


# --- the log -----------------------------------------------------------------------------------

MAX_LINE = 16 * 1024  # characters shown of one line; the download has them whole
MAX_UNACKED = 256 * 1024  # bytes sent but not yet acknowledged by the page (it acknowledges every 64 KB)
QUEUE_LINES = 5_000  # lines read from Docker and not yet sent: the rest are skipped
HELD_LINES = 500  # the newest lines kept while a page is behind, sent when it catches up
LAG_SECONDS = 3  # a reader further behind the present than this skips to it


def _hand_over(loop, callback, item) -> bool:
    """From a reader thread to the socket's event loop; False once that loop is gone."""
    try:
        loop.call_soon_threadsafe(callback, item)
        return True
    except RuntimeError:  # the loop closed: nobody is listening any more
        return False


def _shown(entry: engine.LogLine) -> engine.LogLine:
    """The line cut to what _line can show of it (and one byte more, so that it still says the
    line goes on): what waits in the queue or is held for a page never costs Docker's 1 MiB pieces."""
    if len(entry.text) <= MAX_LINE * 4:
        return entry
    return dataclasses.replace(entry, text=entry.text[: MAX_LINE * 4 + 1])


def _line(entry: engine.LogLine) -> list:
    text = entry.text[: MAX_LINE * 4].decode("utf-8", errors="replace")
    if len(text) > MAX_LINE or entry.partial or len(entry.text) > MAX_LINE * 4:
        text = text[:MAX_LINE] + " … (the line goes on; download the log for all of it)"
    return [1 if entry.stream == "stderr" else 0, entry.timestamp, text]


def _nanoseconds(timestamp: str) -> int:
    """An RFC 3339 stamp as Docker writes it (UTC, up to nine decimals, trailing zeros dropped)
    as nanoseconds since the epoch: stamps of different lengths compare right."""
    try:
        head, _, frac = timestamp.rstrip("Z").partition(".")
        seconds = int(datetime.fromisoformat(head + "+00:00").timestamp())
        return seconds * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    except ValueError:
        return 0


def _behind(timestamp: str, opened: int) -> bool:
    """Whether a line written after the stream was opened (`opened`, ns) is read more than
    LAG_SECONDS after it was written. Lines from before are the history the page asked for."""
    written = _nanoseconds(timestamp)
    return written >= opened and time.time_ns() - written > LAG_SECONDS * 1_000_000_000


def _since(timestamp: str) -> str:
    """Docker's `since` (seconds, with the nanoseconds) for an RFC 3339 stamp."""
    ns = _nanoseconds(timestamp)
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


class LogConsumer(SandboxStream):
    """/ws/sandboxes/<pk>/logs/?tail=N: the last N lines, then the log as it is written.

    Messages: {"t": "lines", "l": [[0 stdout | 1 stderr, time, text], ...]}, {"t": "end"} when
    the sandbox stops (the log resumes when it starts again), {"t": "error", "text": ...}.
    The page acknowledges what it read ({"ack": bytes}). The view stays live whatever the
    output's rate: lines that would put a page more than MAX_UNACKED bytes behind, or that wait
    in the queue when it is full, are skipped and counted, and the page is told
    {"t": "skipped", "n": N, "text": ...} before the next lines it gets. So the delay from a
    write to the screen stays bounded, and a slow reader never grows the server's memory."""

    async def started(self):
        params = dict(p.split("=", 1) for p in self.scope.get("query_string", b"").decode().split("&") if "=" in p)
        try:
            self.tail = max(0, min(5000, int(params.get("tail", "200"))))
        except ValueError:
            self.tail = 200
        self.sent = self.acked = 0
        self.skipped = 0  # lines skipped by the sender, not yet reported to the page
        self.overflowed = 0  # lines the reader thread skipped (only that thread writes it)
        self.overflow_told = 0
        self.held: collections.deque = collections.deque(maxlen=HELD_LINES)
        self.jumped_from = ""  # the stamp after which the reader skipped to the present
        self.continuing: dict[str, bool] = {}
        self.retry_in = 2.0
        self.last_timestamp, self.resume_after = "", 0
        self.container_id = ""
        # Lines from the reader thread: deque appends and pops are atomic, and the thread wakes
        # the sender only when it may be asleep, not once a line (a flood is 100,000 lines a second).
        self.pending: collections.deque = collections.deque()
        self.wake = asyncio.Event()
        self.asleep = True
        self.stream: engine.LogStream | None = None
        self.sender = asyncio.get_running_loop().create_task(self._send_loop())
        await self._follow(self.sandbox)

    async def stopped(self):
        self._stop_reader()
        for task in (getattr(self, "sender", None), getattr(self, "retry", None)):
            if task is not None:
                task.cancel()

    def _stop_reader(self) -> None:
        stream, self.stream = getattr(self, "stream", None), None
        if stream is not None:
            stream.close()

    async def receive(self, text_data=None, bytes_data=None):
        ack = whole_number(parse_message(text_data).get("ack"), low=0, high=1 << 62)
        if ack is not None:
            # Never more than was sent: a page cannot acknowledge its way past the limit.
            self.acked = min(self.sent, max(self.acked, ack))
            if self.held or self.skipped or self.jumped_from or self.overflowed != self.overflow_told:
                await self._flush([])  # the output may have gone quiet while the page was behind

    async def status_changed(self, sandbox: Sandbox) -> None:
        if sandbox.status == Sandbox.Status.RUNNING and sandbox.container_id and self.stream is None:
            await self._follow(sandbox)

    async def _follow(self, sandbox: Sandbox, *, present: bool = False) -> None:
        """Read the log from where the page left it (the last lines of a new container), or,
        with `present`, from its last HELD_LINES lines (Docker finds those from the end of its
        file at once, however far behind the reader was)."""
        if not sandbox.container_id:
            await self.send_json({"t": "end", "text": f"{sandbox.name} has no container yet; its log starts when it runs."})
            return
        new_container = sandbox.container_id != self.container_id
        since = None if new_container or present or not self.last_timestamp else _since(self.last_timestamp)
        # Docker's `since` includes lines of that very instant: those already sent are skipped
        # (so are those of the last lines that the page had before a skip to the present).
        self.resume_after = 0 if new_container else _nanoseconds(self.last_timestamp)
        self.container_id = sandbox.container_id
        tail = self.tail if new_container else HELD_LINES if present else 0
        docker = engine.engine_for(sandbox)
        try:
            self.stream = await asyncio.get_running_loop().run_in_executor(
                None, lambda: docker.log_stream(sandbox.container_id, tail=tail, since=since)
            )
        except engine.EngineError as exc:
            # Docker did not answer (restarting?): try again later, ever more slowly, while the page is open.
            await self.send_json({"t": "error", "text": f"The log is not available: {exc} Trying again in {self.retry_in:g} s…"})
            self.retry = asyncio.get_running_loop().create_task(self._retry_later())
            return
        self.retry_in = 2.0
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, args=(self.stream, loop), name=f"log-{self.sandbox_id}", daemon=True).start()

    def _read(self, stream: engine.LogStream, loop) -> None:
        """Thread: lines from Docker to the sender as fast as Docker gives them; those that find
        the queue full are counted, not queued. Ends when the stream ends or is closed (the
        socket went away), or when the lines it reads were written more than LAG_SECONDS ago:
        the sender then starts again from the present."""
        outcome = ("end", "")
        opened = time.time_ns()
        try:
            for n, entry in enumerate(stream):
                if self.closed:
                    return
                if n % 256 == 255 and _behind(entry.timestamp, opened):
                    outcome = ("behind", entry.timestamp)  # Docker gives the lines slower than they come
                    break
                if len(self.pending) >= QUEUE_LINES:
                    # Never wait for the page: Docker's stream would fall behind the present.
                    self.overflowed += 1
                    continue
                if not self._put(loop, _shown(entry)):
                    return
        except engine.EngineError as exc:
            outcome = ("error", str(exc))
        self._put(loop, (stream, outcome))

    def _put(self, loop, item) -> bool:
        """Thread: queue an item, and wake the sender if it may be asleep (appended first, then
        the flag read: the sender clears the flag before it drains, so no item is left behind)."""
        self.pending.append(item)
        if self.asleep:
            self.asleep = False
            return _hand_over(loop, lambda _: self.wake.set(), None)
        return True

    async def _send_loop(self) -> None:
        """One sender: each message carries what is queued when it goes (up to 500 lines), so a
        lone line goes at once and a burst goes in few messages."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            self.asleep = True
            while self.pending:
                batch, end = self._take(500)
                await self._flush(batch)
                if end is not None:
                    await self._ended(*end)

    def _take(self, most: int) -> tuple[list, tuple | None]:
        """Up to `most` lines off the queue, or the stream's end."""
        batch: list = []
        while self.pending and len(batch) < most:
            item = self.pending.popleft()
            if isinstance(item, tuple):
                return batch, item
            if self.resume_after and _nanoseconds(item.timestamp) <= self.resume_after:
                continue
            if not self.continuing.get(item.stream):
                batch.append(_shown(item))
            # The rest of a line that came in pieces is for the download only.
            self.continuing[item.stream] = item.partial
            self.last_timestamp = item.timestamp or self.last_timestamp
        return batch, None

    async def _flush(self, batch: list) -> None:
        """Send the lines, or, while the page is behind, keep the newest HELD_LINES of them for
        when it catches up and count the rest as skipped."""
        if self.closed:
            return
        if self.sent - self.acked > MAX_UNACKED:
            overflow = len(self.held) + len(batch) - HELD_LINES
            self.skipped += max(0, overflow)
            self.held.extend(batch)  # a deque of HELD_LINES at most: the oldest fall out
            return
        batch, self.held = [*self.held, *batch], collections.deque(maxlen=HELD_LINES)
        if not await self.allowed():
            return
        await self._tell_skipped()
        if batch:
            self.sent += await self.send_json({"t": "lines", "l": [_line(item) for item in batch]})

    async def _tell_skipped(self) -> None:
        """Say how many lines were skipped since the page was last told, before what comes next."""
        overflowed = self.overflowed  # read once: the reader thread may be adding to it
        skipped, self.skipped = self.skipped + overflowed - self.overflow_told, 0
        self.overflow_told = overflowed
        jumped, self.jumped_from = self.jumped_from, ""
        if skipped or jumped:
            what = [f"{skipped:,} lines skipped"] if skipped else []
            if jumped:
                what.append(f"the output written after {jumped[11:19]} UTC skipped up to its last {HELD_LINES} lines")
            text = f"{', then '.join(what)}, to keep up with the output (download the full output)."
            self.sent += await self.send_json({"t": "skipped", "n": skipped, "since": jumped or None, "text": text})

    async def _retry_later(self) -> None:
        await asyncio.sleep(self.retry_in)
        self.retry_in = min(self.retry_in * 2, 30.0)
        if not self.closed and self.stream is None and await self.allowed(force=True):
            sandbox = self.sandbox
            if sandbox.status == Sandbox.Status.RUNNING and sandbox.container_id:
                await self._follow(sandbox)

    async def _ended(self, stream: engine.LogStream, outcome: tuple[str, str]) -> None:
        if stream is not self.stream or self.closed:
            return  # an older reader, closed on purpose
        self.stream = None
        kind, detail = outcome
        if kind == "behind":
            stream.close()
            self.skipped += len(self.held)  # older than the gap: not sent after the notice of it
            self.held.clear()
            self.jumped_from = self.jumped_from or self.last_timestamp or detail
            if await self.allowed(force=True):
                await self._follow(self.sandbox, present=True)
            return
        if kind == "error":
            await self.send_json({"t": "error", "text": f"{detail} Trying again in {self.retry_in:g} s…"})
            await asyncio.sleep(self.retry_in)
            self.retry_in = min(self.retry_in * 2, 30.0)
        else:
            self.retry_in = 2.0
            await self.send_json({"t": "end", "text": "The sandbox stopped; the log resumes when it starts again."})
        if await self.allowed(force=True):
            sandbox = self.sandbox
            if sandbox.status == Sandbox.Status.RUNNING and sandbox.container_id and not self.closed:
                await self._follow(sandbox)


# --- resource use and processes ----------------------------------------------------------------


class StatsConsumer(SandboxStream):
    """/ws/sandboxes/<pk>/stats/: this sandbox's figures at 1 Hz, the last five minutes at once,
    and its processes every two seconds. {"t": "history"|"stats", ...}, {"t": "processes", ...}."""

    async def started(self):
        self.collector = collector_for(engine.host_for(self.sandbox))
        await self.send_json({"t": "history", "s": self.collector.history_of(self.sandbox_id)})
        self.ticks = 0
        self.top_task: asyncio.Task | None = None
        self.collector.subscribe(self, self._tick)

    async def stopped(self):
        if getattr(self, "collector", None):
            self.collector.unsubscribe(self)
        top_task = getattr(self, "top_task", None)
        if top_task is not None:
            top_task.cancel()

    async def _tick(self, current: dict[int, dict]) -> None:
        if self.closed or not await self.allowed():
            return
        if self.sandbox_id in current:
            await self.send_json({"t": "stats", "s": current[self.sandbox_id]})
        self.ticks += 1
        # The process list comes on its own time: a slow `docker top` never holds the tick.
        if self.ticks % 2 == 1 and (self.top_task is None or self.top_task.done()):
            self.top_task = asyncio.get_running_loop().create_task(self._processes())

    async def _processes(self) -> None:
        sandbox = self.sandbox
        if sandbox.status != Sandbox.Status.RUNNING or not sandbox.container_id:
            await self.send_json({"t": "processes", "p": []})
            return
        processes = await self.collector.processes(sandbox.container_id)
        if processes is not None and not self.closed:
            await self.send_json({"t": "processes", "p": processes})


class DashboardStatsConsumer(AsyncWebsocketConsumer):
    """/ws/stats/: figures for every running sandbox the user may see, for the dashboard's cells.
    Who may see what is read again at every tick."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHORISED)
            return
        self.user_id, self.session_key = user.pk, self.scope["session"].session_key or ""
        self.closed = False
        try:
            await self.channel_layer.group_add(live.user_group(self.user_id), self.channel_name)
        except Exception:  # noqa: BLE001 - Redis is down: the page's socket retries
            await self.close(code=CLOSE_TRY_LATER)
            return
        await self.accept()
        self.collector = collector_for()
        self.collector.subscribe(self, self._tick)

    async def disconnect(self, code):
        self.closed = True
        if getattr(self, "collector", None):
            self.collector.unsubscribe(self)
        try:
            await self.channel_layer.group_discard(live.user_group(self.user_id), self.channel_name)
        except Exception:  # noqa: BLE001
            pass

    async def session_ended(self, event):
        if event.get("session") not in (None, self.session_key) and await database_sync_to_async(access.session_still_valid)(
            user_id=self.user_id, session_key=self.session_key
        ):
            return
        self.closed = True
        await self.close(code=CLOSE_UNAUTHORISED)

    async def access_changed(self, event):
        pass  # read again at the next tick anyway

    async def sandbox_status(self, event):
        pass

    @database_sync_to_async
    def _visible(self, ids: list[int]) -> set[int] | None:
        from django.contrib.auth import get_user_model

        from teams.permissions import team_roles

        user = get_user_model().objects.filter(pk=self.user_id, is_active=True).first()
        if user is None or not access.session_is_valid(self.session_key, user):
            return None
        rows = Sandbox.objects.filter(pk__in=ids)
        if not user.is_superuser:
            rows = rows.filter(team_id__in=list(team_roles(user=user)))
        return set(rows.values_list("pk", flat=True))

    async def _tick(self, current: dict[int, dict]) -> None:
        if self.closed:
            return
        visible = await self._visible(list(current))
        if visible is None:
            self.closed = True
            await self.close(code=CLOSE_UNAUTHORISED)
            return
        payload = {pk: figures for pk, figures in current.items() if pk in visible}
        await self.send(text_data=json.dumps({"t": "stats", "s": payload}, separators=(",", ":")))


# --- the terminal ------------------------------------------------------------------------------


class TerminalConsumer(SandboxStream):
    """/ws/sandboxes/<pk>/terminal/: a shell in the sandbox (`docker exec` with a TTY), as the
    sandbox's own non-root user in /workspace. Operators and above. Binary frames carry the
    bytes both ways; {"t": "resize", "cols": C, "rows": R} resizes. Closing the page ends the
    shell, and so does stopping the sandbox. Audited (who, when, how long), never recorded.

    Flow control both ways, as a real terminal has: the page acknowledges the output it has
    written ({"t": "ack", "n": bytes}), and the shell's output is read only while less than
    OUTPUT_WINDOW is unacknowledged (a `yes` into a page that stops reading pauses the shell,
    it does not grow the server). Keystrokes go to the shell from a thread of their own; while
    the shell does not read them, at most INPUT_LIMIT bytes wait and the rest is refused."""

    needed_role = Role.OPERATOR
    SHELL = ["/bin/sh", "-c", "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi"]
    OUTPUT_WINDOW = 1 << 20
    INPUT_LIMIT = 256 * 1024

    async def started(self):
        sandbox = self.sandbox
        self.session = None
        self.terminal: engine.Terminal | None = None
        # What ends the shell is fixed when it opens, so that the end never depends on the
        # user's access at that moment (a removed user's shell is hung up too).
        self.docker = engine.engine_for(sandbox)
        self.output: asyncio.Queue = asyncio.Queue()
        self.sent = self.acked = self.read_total = 0
        self.window_open = threading.Event()
        self.window_open.set()
        self.pending_input = 0
        # Keystrokes go to the shell in order, from one thread of their own (a full pipe must
        # never block the event loop, and two writers could reorder them).
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"term-in-{self.sandbox_id}")
        user = await database_sync_to_async(get_user_model().objects.get)(pk=self.user_id)
        client = self.scope.get("client") or [None]
        try:
            self.session = await database_sync_to_async(terminals.terminal_open)(actor=user, sandbox=sandbox, source_ip=client[0])
            env = {"TERM": "xterm-256color", "HOME": f"/home/{settings.SANDBOX_USER}", "LANG": "C.UTF-8"}
            self.terminal = await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: self.docker.open_terminal(
                    sandbox.container_id,
                    user=f"{settings.SANDBOX_UID}:{settings.SANDBOX_GID}",
                    workdir="/workspace",
                    cmd=self.SHELL,
                    env=env,
                ),
            )
        except Exception as exc:  # noqa: BLE001 - refused or Docker failed: say why, then close
            await self.send_json({"t": "error", "text": f"The terminal could not open: {exc}"})
            await self._end(str(exc))
            return
        if getattr(self, "ending", None) is not None:  # the socket ended while the shell opened
            terminal, self.terminal = self.terminal, None
            await self._hang_up(terminal)
            return
        await database_sync_to_async(terminals.terminal_started)(
            session=self.session, exec_id=self.terminal.exec_id, server=terminals.this_server()
        )
        loop = asyncio.get_running_loop()
        self.sender = loop.create_task(self._send_loop())
        threading.Thread(target=self._read, args=(self.terminal, loop), name=f"term-{self.sandbox_id}", daemon=True).start()

    def _read(self, terminal: engine.Terminal, loop) -> None:
        """Thread: the shell's output, in order, to the one sender; it reads only while less
        than OUTPUT_WINDOW of what it read is unacknowledged."""
        while True:
            while self.read_total - self.acked >= self.OUTPUT_WINDOW:
                self.window_open.clear()
                if self.read_total - self.acked < self.OUTPUT_WINDOW:
                    break  # acknowledged between the test and the clear
                self.window_open.wait(timeout=0.5)
                if self.closed:
                    return
            data = terminal.read()
            if not data or not _hand_over(loop, self.output.put_nowait, data):
                break
            self.read_total += len(data)
        _hand_over(loop, self.output.put_nowait, None)

    async def _send_loop(self) -> None:
        while (data := await self.output.get()) is not None:
            while not self.output.empty() and len(data) < 65536:
                more = self.output.get_nowait()
                if more is None:
                    self.output.put_nowait(None)
                    break
                data += more
            if self.closed or not await self.allowed():
                return
            await self.send(bytes_data=data)
            self.sent += len(data)
        await self._end(await self._why_the_shell_ended())

    async def _why_the_shell_ended(self) -> str:
        """The shell's output ended: it exited, or the sandbox's container is going away under
        it (a stop, a restart, a destroy: the sandbox's claim or status says which)."""
        row = await database_sync_to_async(Sandbox.objects.filter(pk=self.sandbox_id).values_list("status", "pending_action").first)()
        if row is None:
            return "the shell ended (the sandbox was deleted)"
        status, pending = row
        if pending:
            return f"the shell ended while the sandbox's {pending} was under way"
        return "the shell ended" if status == Sandbox.Status.RUNNING else f"the shell ended (the sandbox is {status})"

    def _write(self, data: bytes) -> None:
        """Hand keystrokes to the writer thread without waiting for the shell to take them."""
        terminal = self.terminal
        if terminal is None:
            return
        if self.pending_input + len(data) > self.INPUT_LIMIT:
            return  # the shell reads nothing (a foreground command): typing ahead is bounded
        self.pending_input += len(data)
        future = self.writer.submit(terminal.send, data)
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _f: _hand_over(loop, self._written, len(data)))

    def _written(self, size: int) -> None:
        self.pending_input -= size

    async def receive(self, text_data=None, bytes_data=None):
        if self.closed or self.terminal is None or not await self.allowed():
            return
        if bytes_data is not None:
            self._write(bytes_data)
            return
        message = parse_message(text_data)
        kind = message.get("t")
        if kind == "ack":
            n = whole_number(message.get("n"), low=0, high=1 << 62)
            if n is not None:
                self.acked = min(self.sent, max(self.acked, n))
                self.window_open.set()
        elif kind == "resize":
            cols = whole_number(message.get("cols"), low=1, high=1000)
            rows = whole_number(message.get("rows"), low=1, high=500)
            if cols is not None and rows is not None:
                docker, exec_id = self.docker, self.terminal.exec_id
                try:
                    await asyncio.get_running_loop().run_in_executor(None, lambda: docker.resize_terminal(exec_id, cols=cols, rows=rows))
                except engine.EngineError:
                    pass
        elif kind == "in" and isinstance(message.get("d"), str):
            self._write(message["d"].encode("utf-8", "replace"))

    async def status_changed(self, sandbox: Sandbox) -> None:
        if sandbox.status != Sandbox.Status.RUNNING:
            await self._end(f"the sandbox is {sandbox.status}")

    async def stopped(self):
        await self._end(self.end_reason or "the page closed")

    async def _end(self, reason: str) -> None:
        """Hang up and record the end, once; a later call waits for the first to be done (so
        the socket closes after the record). The first cause is the one recorded: hanging up
        ends the shell's output too, and the sender would otherwise record "the shell ended"
        over the page closing, a removal from the team or a sign-out."""
        first = getattr(self, "ending", None) is None
        if first:
            self.end_reason = getattr(self, "end_reason", "") or reason
            self.ending = asyncio.ensure_future(self._close_session())
        try:
            await asyncio.shield(self.ending)
        except Exception:
            if first:
                raise  # to dispatch(), which logs it and closes the socket; later callers carry on

    async def _close_session(self) -> None:
        session, self.session = getattr(self, "session", None), None
        terminal, self.terminal = getattr(self, "terminal", None), None
        if getattr(self, "window_open", None) is not None:
            self.window_open.set()  # let the reader thread see the end
        await self._hang_up(terminal)
        if getattr(self, "writer", None) is not None:
            self.writer.shutdown(wait=False, cancel_futures=True)
        if session is not None:
            await database_sync_to_async(terminals.terminal_close)(session=session, reason=self.end_reason)
        if not self.closed:
            self.closed = True
            try:
                await self.send_json({"t": "end", "text": f"Terminal closed: {self.end_reason}."})
            except Exception:  # noqa: BLE001 - the socket may be gone already
                pass
            await self.close()

    async def _hang_up(self, terminal: engine.Terminal | None) -> None:
        if terminal is None:
            return
        terminal.close()  # a keystroke write blocked on a full pipe fails now
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.docker.end_terminal, terminal.exec_id)
        except engine.EngineError:
            pass  # the sandbox (or Docker) is gone, and the shell with it
