"""The one place that sends a webhook over the network (urllib3, used directly).

It connects to the address webhooks.addresses judged, never resolving the name again (no DNS
rebinding between the check and the connection), with the Host header and, for https, the
TLS server name set to the URL's host: the certificate is verified against that name, with the
system's trust store. Redirects are not followed (a 3xx is an answer like any other). Timeouts
are short, and at most WEBHOOK_RESPONSE_BYTES of the answer are read, within
WEBHOOK_TOTAL_SECONDS: a receiver that answers slowly or streams forever cannot hold a worker.

The timeouts of connect and read bound each wait for a byte, not the whole: a receiver that
sends its TLS handshake or its headers a byte at a time, each within the read timeout, would
keep the attempt going for hours (http.client reads up to 100 header lines of 64 KiB). So a
timer shuts the connection's socket down once WEBHOOK_TOTAL_SECONDS have passed, wherever the
attempt is; the blocked read then ends and the attempt is told as cut off (and retried).
"""

import contextlib
import socket
import threading
import time
from dataclasses import dataclass

import urllib3
from django.conf import settings
from urllib3.exceptions import HTTPError

from .addresses import Target


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no answer (the connection failed or timed out)
    error: str  # why there was no answer, or the start of the body of an answer that was not 2xx
    retry_after: float | None = None  # a 429's or 503's Retry-After, in seconds


class _Deadline:
    """Shuts down the sockets it watches once `seconds` have passed (a daemon timer)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if not self.expired:
                return
        self._expire()  # connected after the deadline: cut at once

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _watched(connection_class: type, deadline: _Deadline) -> type:
    """The pool's connection class, with its raw socket (before TLS wraps it, the same file
    descriptor) handed to the deadline as soon as it is connected."""

    class Watched(connection_class):  # type: ignore[valid-type,misc]
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            deadline.watch(sock)
            return sock

    return Watched


def _pool(target: Target) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(connect=settings.WEBHOOK_CONNECT_SECONDS, read=settings.WEBHOOK_READ_SECONDS)
    if target.url.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            target.address,
            target.url.port,
            timeout=timeout,
            maxsize=1,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=settings.WEBHOOK_CA_FILE or None,
            server_hostname=target.url.host,
            assert_hostname=target.url.host,
        )
    return urllib3.HTTPConnectionPool(target.address, target.url.port, timeout=timeout, maxsize=1, retries=False)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff decides


def _cut_off(cut: _Deadline) -> str:
    return f"The receiver took longer than {cut.seconds:g} s: the attempt was cut off."


def post(target: Target, body: bytes, headers: dict[str, str]) -> Answer:
    """POST `body` to the target; what came back."""
    deadline = time.monotonic() + settings.WEBHOOK_TOTAL_SECONDS
    cut = _Deadline(settings.WEBHOOK_TOTAL_SECONDS)
    pool = _pool(target)
    pool.ConnectionCls = _watched(pool.ConnectionCls, cut)
    try:
        response = pool.urlopen(
            "POST",
            target.url.path,
            body=body,
            headers={**headers, "Host": target.url.host_header, "Content-Type": "application/json", "User-Agent": "ccpanel-webhooks"},
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            if cut.expired:  # the headers were cut short (http.client takes the end for their end)
                return Answer(None, _cut_off(cut))
            if 200 <= response.status < 300:
                return Answer(response.status, "")
            read = b""
            while len(read) < settings.WEBHOOK_RESPONSE_BYTES and time.monotonic() < deadline:
                chunk = response.read1(settings.WEBHOOK_RESPONSE_BYTES - len(read))
                if not chunk:
                    break
                read += chunk
            text = " ".join(read.decode("utf-8", "replace").split())[:200]
            return Answer(response.status, text, _retry_after(response.headers.get("Retry-After")))
        finally:
            response.close()
    except (HTTPError, OSError, ValueError) as exc:  # ValueError: what http.client refuses to send
        if cut.expired:
            return Answer(None, _cut_off(cut))
        return Answer(None, f"{type(exc).__name__}: {exc}"[:300])
    finally:
        cut.cancel()
        pool.close()
