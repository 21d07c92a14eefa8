"""Streams: a container's output, its resource use, its processes and interactive sessions. The
live views (logs, stats, terminal) read these per socket; they never pass through the status path.

Blocking by nature (docker-py is synchronous): the consumers read them from a thread of their
own and hand what they read to their event loop.
"""

import http.client
import logging
import os
import signal
import socket as socketlib
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import urllib3.exceptions
from docker.utils.socket import STDERR

from .client import BaseClient, EngineError, EngineUnavailable, NotFound

log = logging.getLogger(__name__)


@dataclass
class LogLine:
    stream: str  # "stdout" or "stderr"
    timestamp: str  # RFC 3339, as Docker stamped it
    text: bytes  # the line without its newline, as the container wrote it (any bytes)
    partial: bool = False  # the line goes on in the next LogLine of the same stream (a very long line)


MAX_PIECE = 1 << 20  # a line longer than this comes in pieces: memory stays bounded whatever the agent writes


class LogStream:
    """Lines of a container's output, oldest first, then following. Iterate it; `close()` from
    any thread ends the iteration. Ends by itself when the container stops."""

    def __init__(self, response, sock, tty: bool):
        self._response = response
        self._sock = sock  # the connection under the response: shut down to wake a blocked read
        self._tty = tty
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()
        raw = getattr(self._sock, "_sock", self._sock)
        try:
            raw.shutdown(socketlib.SHUT_RDWR)
        except (OSError, ValueError, AttributeError):
            pass
        try:
            self._response.close()
        except (OSError, ValueError):
            pass

    def _frames(self) -> Iterator[tuple[str, bytes]]:
        """(stream, chunk) from Docker's multiplexed log format (8-byte headers), read through the
        HTTP response (which undoes the chunked transfer encoding)."""
        raw = self._response.raw
        if self._tty:  # one stream, no headers (a container made before the panel stopped using a TTY)
            while chunk := raw.read1(4096):
                yield "stdout", chunk
            return
        while True:
            header = raw.read(8)
            if not header or len(header) < 8:
                return
            stream_id, length = struct.unpack(">BxxxL", header)
            if not length:
                continue
            data = raw.read(length)
            if not data:
                return
            yield ("stderr" if stream_id == STDERR else "stdout"), data

    def __iter__(self) -> Iterator[LogLine]:
        try:
            yield from (self._raw_lines() if self._tty else self._message_lines())
        except (OSError, ValueError, AttributeError, http.client.HTTPException, urllib3.exceptions.HTTPError):
            if not self._closed.is_set():
                raise EngineUnavailable("The log stream from Docker broke off.") from None

    def _message_lines(self) -> Iterator[LogLine]:
        """Each frame is one log message, "<stamp> <text>", ending in a newline unless Docker
        cut a long line into pieces (it does at 16 KB, stamping each piece): pieces are joined
        without their stamps, up to MAX_PIECE, so a line costs time linear in its length."""
        pending: dict[str, tuple[str, bytearray]] = {}
        for name, chunk in self._frames():
            stamp, _, text = chunk.partition(b" ")
            complete = text.endswith(b"\n")
            if name in pending:
                first_stamp, buffer = pending[name]
            else:
                first_stamp, buffer = stamp.decode("ascii", "replace"), bytearray()
            buffer += text[:-1] if complete else text
            if complete:
                pending.pop(name, None)
                yield LogLine(name, first_stamp, bytes(buffer).rstrip(b"\r"))
            elif len(buffer) >= MAX_PIECE:
                pending.pop(name, None)
                yield LogLine(name, first_stamp, bytes(buffer), partial=True)
            else:
                pending[name] = (first_stamp, buffer)
        for name, (first_stamp, buffer) in pending.items():
            yield LogLine(name, first_stamp, bytes(buffer))

    def _raw_lines(self) -> Iterator[LogLine]:
        """A container made with a TTY (before the panel stopped using one): one stream, lines
        as they come; only the new bytes are searched for the end of a line."""
        buffer = bytearray()
        for _name, chunk in self._frames():
            start = len(buffer)
            buffer += chunk
            while (end := buffer.find(b"\n", start)) >= 0:
                yield _parse("stdout", bytes(buffer[:end]))
                del buffer[: end + 1]
                start = 0
            if len(buffer) >= MAX_PIECE:
                line = _parse("stdout", bytes(buffer))
                line.partial = True
                yield line
                buffer.clear()
        if buffer:
            yield _parse("stdout", bytes(buffer))


def _parse(stream: str, raw: bytes) -> LogLine:
    stamp, _, text = raw.partition(b" ")
    return LogLine(stream, stamp.decode("ascii", "replace"), text.rstrip(b"\r"))


@dataclass
class Terminal:
    """An interactive shell in a container (`docker exec -it`), as a raw two-way socket."""

    exec_id: str
    sock: Any

    def send(self, data: bytes) -> bool:
        """Write keystrokes; False once the shell's socket is gone."""
        raw = getattr(self.sock, "_sock", self.sock)
        try:
            raw.sendall(data)
            return True
        except Exception:  # noqa: BLE001 - closed meanwhile: nothing more reaches the shell
            return False

    def read(self, size: int = 65536) -> bytes:
        raw = getattr(self.sock, "_sock", self.sock)
        try:
            return raw.recv(size)
        except Exception:  # noqa: BLE001 - closed meanwhile, in whatever way: the shell's output has ended
            return b""

    def close(self) -> None:
        raw = getattr(self.sock, "_sock", self.sock)
        try:
            raw.shutdown(socketlib.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class StreamsMixin(BaseClient):
    def logs(self, container_id: str, *, tail: int = 200) -> str:
        """The last `tail` lines of the container's output, as text."""
        raw = self.call(self.api.logs, container_id, stdout=True, stderr=True, tail=tail, timestamps=False)
        return raw.decode("utf-8", errors="replace")

    def log_stream(self, container_id: str, *, tail: int | str = 100, follow: bool = True, since: str | None = None) -> LogStream:
        """The container's output with timestamps, stdout and stderr told apart: the last `tail`
        lines (or those after the RFC 3339 time `since`), then, with `follow`, as it comes."""
        tty = bool(self.call(self.api.inspect_container, container_id)["Config"].get("Tty"))
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "timestamps": 1, "follow": int(follow), "tail": str(tail)}
        if since:
            params["since"] = since
            params["tail"] = "all"
        response = self.call(self.api._get, self.api._url("/containers/{0}/logs", container_id), params=params, stream=True)
        if response.status_code == 404:
            raise NotFound(f"No such container: {container_id}")
        if response.status_code >= 400:
            raise EngineError(response.text[:300])
        sock = self.call(self.api._get_raw_response_socket, response)
        self.api._disable_socket_timeout(sock)  # a followed log may be quiet for hours
        return LogStream(response, sock, tty)

    def stats_once(self, container_id: str) -> dict[str, Any]:
        """One sample of the container's resource use (Docker's one-shot stats: no waiting)."""
        return self.call(self.api.stats, container_id, stream=False, one_shot=True)

    def top(self, container_id: str) -> list[dict[str, str]]:
        """The processes in a running container, as `docker top` lists them."""
        found = self.call(self.api.top, container_id, ps_args="-eo pid,uid,pcpu,rss,etime,args")
        titles = [t.lower() for t in found.get("Titles") or []]
        return [dict(zip(titles, row, strict=False)) for row in found.get("Processes") or []]

    def diff(self, container_id: str) -> list[dict[str, Any]]:
        """What changed in the container's own file system (outside the mounts): `docker diff`."""
        kinds = {0: "changed", 1: "added", 2: "deleted"}
        return [{"path": c["Path"], "kind": kinds.get(c["Kind"], "?")} for c in self.call(self.api.diff, container_id) or []]

    def open_terminal(self, container_id: str, *, user: str, workdir: str, cmd: list[str], env: dict[str, str]) -> Terminal:
        """Start an interactive shell with a TTY in a running container."""
        created = self.call(self.api.exec_create, container_id, cmd, stdin=True, tty=True, user=user, workdir=workdir, environment=env)
        sock = self.call(self.api.exec_start, created["Id"], tty=True, socket=True)
        return Terminal(created["Id"], sock)

    def resize_terminal(self, exec_id: str, *, cols: int, rows: int) -> None:
        self.call(self.api.exec_resize, exec_id, height=rows, width=cols)

    def end_terminal(self, exec_id: str, *, container_id: str) -> bool:
        """Hang up a terminal's shell and whatever it runs (SIGHUP to its process group, then
        SIGKILL), as closing a real terminal would: Docker keeps an exec running when its client
        goes away. Only where the engine runs on this machine; False elsewhere. Only an exec of
        `container_id` (the sandbox's container, as the panel recorded it) is signalled: an exec
        id of any other container on this engine (another sandbox's, or no sandbox's at all)
        is left alone."""
        if not self.host.is_local:
            return False
        try:
            found = self.call(self.api.exec_inspect, exec_id)
        except NotFound:
            return True
        if len(container_id) < 12 or not str(found.get("ContainerID") or "").startswith(container_id):
            log.warning("terminal hang-up refused: exec %s is not one of container %s", exec_id[:12], container_id[:12] or "(none)")
            return True
        pid = int(found.get("Pid") or 0)
        if not found.get("Running") or pid <= 1:
            return True
        for sig, wait in ((signal.SIGHUP, 1.0), (signal.SIGKILL, 0)):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                return True
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self.terminal_running(exec_id):
                    return True
                time.sleep(0.05)
        return True

    def terminal_running(self, exec_id: str) -> bool:
        try:
            return bool(self.call(self.api.exec_inspect, exec_id).get("Running"))
        except NotFound:
            return False


def log_file_chunks(lines: Iterator[LogLine]) -> Iterator[bytes]:
    """A log as a text file: "<time> <stream> <text>" a line, with a line that came in pieces
    written whole again (its pieces follow each other unless the other stream cuts in)."""
    continuing = ""
    for line in lines:
        if continuing and continuing != line.stream:
            yield b"\n"
            continuing = ""
        head = b"" if continuing else f"{line.timestamp} {line.stream} ".encode()
        yield head + line.text + (b"" if line.partial else b"\n")
        continuing = line.stream if line.partial else ""
    if continuing:
        yield b"\n"
