"""A sandbox's log, live: the last lines, then the log as it is written, at whatever rate the
output comes, without ever growing the server's memory for a slow page (see LogConsumer)."""

import asyncio
import collections
import dataclasses
import threading
import time
from datetime import datetime

from .. import engine
from ..models import Sandbox
from .streams import SandboxStream, hand_over, parse_message, whole_number

MAX_LINE = 16 * 1024  # characters shown of one line; the download has them whole
MAX_UNACKED = 256 * 1024  # bytes sent but not yet acknowledged by the page (it acknowledges every 64 KB)
QUEUE_LINES = 5_000  # lines read from Docker and not yet sent: the rest are skipped
HELD_LINES = 500  # the newest lines kept while a page is behind, sent when it catches up
LAG_SECONDS = 3  # a reader further behind the present than this skips to it


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
            return hand_over(loop, lambda _: self.wake.set(), None)
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
            if self.resume_after:
                if _nanoseconds(item.timestamp) <= self.resume_after:
                    continue
                self.resume_after = 0  # past what the page had: later lines are newer still
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
