"""The one place that sends a webhook over the network (urllib3, used directly).

It connects to the address webhooks.addresses judged, never resolving the name again (no DNS
rebinding between the check and the connection), with the Host header and, for https, the
TLS server name set to the URL's host: the certificate is verified against that name, with the
system's trust store. Redirects are not followed (a 3xx is an answer like any other). Timeouts
are short, and at most WEBHOOK_RESPONSE_BYTES of the answer are read, within
WEBHOOK_TOTAL_SECONDS: a receiver that answers slowly or streams forever cannot hold a worker.
"""

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


def post(target: Target, body: bytes, headers: dict[str, str]) -> Answer:
    """POST `body` to the target; what came back."""
    deadline = time.monotonic() + settings.WEBHOOK_TOTAL_SECONDS
    pool = _pool(target)
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
    except HTTPError as exc:
        return Answer(None, f"{type(exc).__name__}: {exc}"[:300])
    except (OSError, ValueError) as exc:  # ValueError: what http.client refuses to send
        return Answer(None, f"{type(exc).__name__}: {exc}"[:300])
    finally:
        pool.close()
