"""The agent-activity receiver: Claude Code's OTLP/HTTP JSON export, from every running sandbox
of this host, into AgentEvent rows.

For each running sandbox it listens on 127.0.0.1:AGENT_OTLP_PORT *inside the sandbox's own
network namespace* (agents.netns), so the sandbox reaches it in every network mode, `none`
included, and reaches nothing else through it: the listener answers two paths and writes rows,
it never connects anywhere. The listener knows its sandbox, so one sandbox cannot write
another's events. Docker's events (a start, a restart, a stop) make it look again at once, and
it looks every AGENT_RECEIVER_RECONCILE_SECONDS anyway: a sandbox whose namespace changed (a
restart) gets a new listener, a stopped one loses its own (its namespace is not kept alive).

Everything is bounded: the head of a request, its body (AGENT_OTLP_MAX_BODY, gzip included; the
time it takes to come), the
records of one request, the attributes of one record, the connections at once, the events a
second of each sandbox (agents.budget), and the rows waiting for the database. Rows are written
in batches by one thread (Writer).
"""

import asyncio
import collections
import json
import logging
import queue
import re
import threading
import time
import zlib
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, close_old_connections

from sandboxes import engine

from . import netns, otlp, services
from .budget import EventBudget

log = logging.getLogger(__name__)
HEAD_LIMIT = 16 * 1024
IDLE_SECONDS = 30.0
MAX_PENDING_ROWS = 50_000  # waiting for the database; past it, requests get 503
WAKING = {"start", "restart", "die", "stop", "kill", "destroy", "pause", "unpause"}
LINGER_SECONDS, LINGER_BYTES = 2.0, 4 * 1024 * 1024  # read and dropped after a refusal, at most
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large"}
REASONS |= {415: "Unsupported Media Type", 429: "Too Many Requests", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Listener:
    sandbox_id: int
    container_id: str
    namespace: int
    record_prompts: bool
    secrets: frozenset[str] = frozenset()  # its env and file secrets' values, blanked out of its events
    server: asyncio.Server | None = None
    connections: set = field(default_factory=set)


class Writer(threading.Thread):
    """Writes what the listeners accepted, in batches: a transaction for what came in the last
    tenth of a second (or 5000 rows), not one per request."""

    def __init__(self):
        super().__init__(name="agent-events-writer", daemon=True)
        self.queue: queue.Queue[tuple[int, list[dict]]] = queue.Queue()
        self.pending = 0
        self.written = 0
        self.lock = threading.Lock()

    def put(self, sandbox_id: int, rows: list[dict]) -> None:
        with self.lock:
            self.pending += len(rows)
        self.queue.put((sandbox_id, rows))

    def run(self) -> None:
        while True:
            batches = [self.queue.get()]
            count = len(batches[0][1])
            deadline = time.monotonic() + 0.1
            while count < 5000 and (left := deadline - time.monotonic()) > 0:
                try:
                    batches.append(self.queue.get(timeout=left))
                except queue.Empty:
                    break
                count += len(batches[-1][1])
            try:
                close_old_connections()
                self.written += services.record_events(batches)
            except Exception:  # the database is away: these are lost, the next ones are tried
                log.warning("could not write %d agent events", count, exc_info=True)
            with self.lock:
                self.pending -= count


def _response(status: int, body: bytes, *, close: bool) -> bytes:
    head = f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if status in (429, 503):
        head += "Retry-After: 1\r\n"  # the OTLP exporter waits that long before it sends the batch again
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


def _head(raw: bytes) -> tuple[str, str, dict[str, str]]:
    try:
        lines = raw.decode("latin-1").split("\r\n")
        method, path, _version = lines[0].split(" ", 2)
    except ValueError:
        raise Refused(400, "not an HTTP request") from None
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, path.split("?", 1)[0], headers


def _inflate(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise Refused(415, f"content encoding {encoding!r} is not taken")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, settings.AGENT_OTLP_MAX_BODY + 1)
    except zlib.error:
        raise Refused(400, "not gzip") from None
    if len(out) > settings.AGENT_OTLP_MAX_BODY or inflater.unconsumed_tail:
        raise Refused(413, f"more than {settings.AGENT_OTLP_MAX_BODY} bytes once inflated")
    return out


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After an answer that closes the connection: stop writing, and read (and drop) what the
    sender still sends, for a moment and a few MiB at most, so that closing with its body unread
    does not reset the connection before it reads the answer (as a web server's lingering close)."""
    loop = asyncio.get_running_loop()
    deadline, left = loop.time() + LINGER_SECONDS, LINGER_BYTES
    try:
        if writer.can_write_eof():
            writer.write_eof()
        while left > 0 and (wait := deadline - loop.time()) > 0:
            chunk = await asyncio.wait_for(reader.read(65536), wait)
            if not chunk:
                return
            left -= len(chunk)
    except (TimeoutError, ConnectionError, OSError):
        return


class Receiver:
    def __init__(self, *, port: int | None = None):
        self.port = port or settings.AGENT_OTLP_PORT
        self.listeners: dict[int, Listener] = {}
        self.budget = EventBudget()
        self.writer = Writer()
        self.wake: asyncio.Event | None = None
        self.accepted = 0
        self.answers: collections.Counter[int] = collections.Counter()  # status -> how many (the log's summary)

    # --- which sandboxes have a listener -------------------------------------------------------

    def wanted(self) -> dict[int, tuple[str, int, bool, frozenset[str]]]:
        """sandbox id -> (container, pid, records prompts, its secrets' values) of every running
        sandbox container of this machine's engine (blocking: Docker and the database)."""
        from sandboxes.models import Sandbox

        close_old_connections()
        eng = engine.engine_for()
        running = {c.id: c for c in eng.instance_containers() if c.status == "running"}
        rows = Sandbox.objects.filter(container_id__in=list(running)).values_list(
            "pk", "container_id", "team__agent_policy__record_prompts"
        )
        found = {}
        for pk, container_id, prompts in rows:
            try:
                pid = int((eng.inspect_container(container_id).get("State") or {}).get("Pid") or 0)
            except engine.EngineError:
                continue
            if pid > 0:
                found[pk] = (container_id, pid, bool(prompts), frozenset())
        values = services.secret_values(found)
        return {pk: (*wanted[:3], values.get(pk, frozenset())) for pk, wanted in found.items()}

    async def reconcile(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            wanted = await loop.run_in_executor(None, self.wanted)
        except engine.EngineError as exc:
            log.warning("Docker unavailable (%s): the listeners stay as they are", exc)
            return
        except DatabaseError as exc:  # locked, restarting: the next look tries again (ending would stop the panel's other processes)
            log.warning("the database is unavailable (%s): the listeners stay as they are", exc)
            return
        for sandbox_id in [s for s in self.listeners if s not in wanted]:
            self.close(sandbox_id)
        for sandbox_id, (container_id, pid, prompts, secrets) in wanted.items():
            have = self.listeners.get(sandbox_id)
            try:
                namespace = netns.namespace_of(pid)
            except OSError:
                continue  # it stopped meanwhile
            if have and have.container_id == container_id and have.namespace == namespace:
                have.record_prompts = prompts
                have.secrets |= secrets  # a rotated secret's old value may still be in the running sandbox
                continue
            if have:
                self.close(sandbox_id)
            await self.open(sandbox_id, container_id, pid, prompts, secrets)

    async def open(self, sandbox_id: int, container_id: str, pid: int, prompts: bool, secrets: frozenset[str] = frozenset()) -> None:
        loop = asyncio.get_running_loop()
        try:
            sock, namespace = await loop.run_in_executor(None, netns.listen_in, pid, self.port)
        except OSError as exc:
            log.warning("no agent-activity listener for sandbox %s: %s", sandbox_id, exc)
            return
        listener = Listener(sandbox_id, container_id, namespace, prompts, secrets)
        listener.server = await asyncio.start_server(lambda r, w: self.serve(listener, r, w), sock=sock, limit=HEAD_LIMIT)
        self.listeners[sandbox_id] = listener
        log.info("listening for sandbox %s's agent events", sandbox_id)

    def close(self, sandbox_id: int) -> None:
        """Close the sandbox's listener and its connections: its namespace is not kept alive."""
        listener = self.listeners.pop(sandbox_id)
        if listener.server is not None:
            listener.server.close()
        for writer in list(listener.connections):
            writer.close()
        log.info("no longer listening for sandbox %s's agent events", sandbox_id)

    # --- one connection ------------------------------------------------------------------------

    async def serve(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(listener.connections) >= settings.AGENT_OTLP_MAX_CONNECTIONS:
            writer.close()
            return
        listener.connections.add(writer)
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_SECONDS)
                except asyncio.LimitOverrunError:
                    raw = b""
                try:
                    if not raw:
                        raise Refused(431, "request head too large")
                    status, body, close = await self.answer(listener, raw, reader)
                except Refused as refused:
                    status, body, close = refused.status, json.dumps({"error": refused.message}).encode(), True
                self.answers[status] += 1
                writer.write(_response(status, body, close=close))
                await writer.drain()
                if close:
                    await _linger(reader, writer)
                    break
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, asyncio.CancelledError):
            pass  # the sender went away, was idle too long, or the receiver stops
        finally:
            listener.connections.discard(writer)
            writer.close()

    async def answer(self, listener: Listener, raw: bytes, reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        method, path, headers = _head(raw)
        if path not in ("/v1/logs", "/v1/metrics"):
            raise Refused(404, "only /v1/logs and /v1/metrics are here")
        if method != "POST":
            raise Refused(405, "POST only")
        if "transfer-encoding" in headers or not re.fullmatch(r"[0-9]{1,12}", headers.get("content-length", "")):  # not "²"
            raise Refused(411, "a Content-Length is required")
        length = int(headers["content-length"])
        if length > settings.AGENT_OTLP_MAX_BODY:
            raise Refused(413, f"more than {settings.AGENT_OTLP_MAX_BODY} bytes")
        if "json" not in headers.get("content-type", ""):
            raise Refused(415, "OTLP over HTTP with the JSON encoding only (OTEL_EXPORTER_OTLP_PROTOCOL=http/json)")
        if not self.budget.left(listener.sandbox_id):  # refused on its head: no parsing of what would be refused
            raise Refused(429, "this sandbox sends more events than it may; try later")
        body = await asyncio.wait_for(reader.readexactly(length), IDLE_SECONDS)  # a body that never comes holds nothing
        body = _inflate(body, headers.get("content-encoding", "").lower())
        close = headers.get("connection", "").lower() == "close"
        try:
            if path == "/v1/metrics":
                otlp.metric_points(otlp.loads(body))
                self.budget.take(listener.sandbox_id, 1)  # a request from the same budget: parsing is not free
                return 200, b"{}", close
            rows = otlp.blank_secrets(otlp.event_rows(body, record_prompts=listener.record_prompts), listener.secrets)
        except otlp.OTLPError as exc:
            raise Refused(400, str(exc)) from None
        if self.writer.pending + len(rows) > MAX_PENDING_ROWS:
            raise Refused(503, "the panel is behind writing events; try later")
        if rows and not self.budget.take(listener.sandbox_id, len(rows)):
            raise Refused(429, "this sandbox sends more events than it may; try later")
        if rows:
            self.writer.put(listener.sandbox_id, rows)
            self.accepted += len(rows)
        return 200, b"{}", close

    # --- the whole ------------------------------------------------------------------------------

    def _follow_events(self, loop: asyncio.AbstractEventLoop) -> None:
        """Docker's events of this panel's containers wake the reconcile at once (a thread)."""
        while True:
            try:
                for event in engine.engine_for(timeout=3600).events(since=time.time()):
                    if event["action"] in WAKING:
                        loop.call_soon_threadsafe(self.wake.set)  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - Docker away: the periodic reconcile covers it
                log.warning("Docker events unavailable (%s)", exc)
            time.sleep(1.0)

    async def run(self, stop: asyncio.Event | None = None, ready=None) -> None:
        loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        self.writer.start()
        threading.Thread(target=self._follow_events, args=(loop,), name="agent-events-docker", daemon=True).start()
        stop = stop or asyncio.Event()
        while not stop.is_set():
            self.wake.clear()
            await self.reconcile()
            if ready is not None:
                ready()
                ready = None
            try:
                await asyncio.wait_for(self.wake.wait(), settings.AGENT_RECEIVER_RECONCILE_SECONDS)
                await asyncio.sleep(0.2)  # a burst of events (stop, die, start) makes one look
            except TimeoutError:
                pass
        for sandbox_id in list(self.listeners):
            self.close(sandbox_id)
        await asyncio.sleep(0.2)  # the connections' tasks see their close and end before the loop does
        log.info("%s", self.summary())

    def summary(self) -> str:
        answers = ", ".join(f"{status}: {n}" for status, n in sorted(self.answers.items()))
        return f"{self.accepted} agent events accepted, {self.writer.written} written; answers {answers or 'none'}"
