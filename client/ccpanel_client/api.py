"""Calls to the panel's API over HTTP, with the standard library only (urllib).

Every failure becomes a ClientError with the exit code the command ends with: 1 for what the
panel refused (4xx: its message is shown), 2 when it cannot be reached, 3 for its own failure
(5xx). The token is sent in the Authorization header and nowhere else: never in a message,
never to another address (redirects are not followed: urllib would carry the header along).
"""

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any, BinaryIO

from . import __version__

EXIT_REFUSED = 1  # 4xx, and what the client itself refuses (usage, configuration)
EXIT_UNREACHABLE = 2  # no connection, or no HTTP answer
EXIT_SERVER = 3  # 5xx
MAX_LINE_BYTES = 256 * 1024  # a longer "line" (no newline) is printed in pieces, never held whole


class ClientError(Exception):
    def __init__(self, message: str, *, code: int = EXIT_REFUSED, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # the 3xx is then raised as an HTTPError: said, never followed with the token


def describe_error(status: int, body: bytes) -> str:
    """The API's own message: `detail`, a policy's `problems`, or each field's messages."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        text = body.decode("utf-8", "replace").strip()
        return f"HTTP {status}: {text[:500]}" if text else f"HTTP {status}"
    if not isinstance(data, dict):
        return f"HTTP {status}: {data}"
    lines = []
    if "detail" in data:
        lines.append(str(data["detail"]))
    lines += [f"  - {problem}" for problem in data.get("problems") or []]
    for field, messages in data.items():
        if field in ("detail", "problems"):
            continue
        for message in messages if isinstance(messages, list) else [messages]:
            lines.append(f"{field}: {message}" if field != "non_field_errors" else str(message))
    return "\n".join(lines) or f"HTTP {status}"


class Api:
    def __init__(self, url: str, token: str, *, timeout: float = 30.0):
        self.base = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirects)

    def __repr__(self) -> str:
        return f"Api({self.base!r})"  # never the token

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None and v != ""}, doseq=True)
        return f"{self.base}{path}" + (f"?{query}" if query else "")

    def _open(self, method: str, path: str, *, params=None, body=None, timeout: float | None = None):
        data = None if body is None else json.dumps(body).encode()
        # The URL's scheme is http(s), checked where it is read (config.resolve): never file: or another.
        request = urllib.request.Request(self.url(path, params), data=data, method=method)  # noqa: S310
        request.add_header("Authorization", f"Bearer {self._token}")
        request.add_header("Accept", "application/json, text/plain")
        request.add_header("User-Agent", f"ccpanel/{__version__}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            return self._opener.open(request, timeout=self.timeout if timeout is None else timeout)
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                body_bytes = exc.read()
            except OSError:
                body_bytes = b""
            if 300 <= status < 400:
                message = f"The panel answered with a redirect (HTTP {status}) to {exc.headers.get('Location', '?')}: check the URL."
                raise ClientError(message, code=EXIT_REFUSED, status=status) from None
            code = EXIT_SERVER if status >= 500 else EXIT_REFUSED
            raise ClientError(describe_error(status, body_bytes), code=code, status=status) from None
        except urllib.error.URLError as exc:
            raise ClientError(f"Cannot reach the panel at {self.base}: {exc.reason}", code=EXIT_UNREACHABLE) from None
        except (OSError, ValueError) as exc:  # a reset, a timeout, a malformed answer
            raise ClientError(f"Cannot reach the panel at {self.base}: {exc}", code=EXIT_UNREACHABLE) from None

    def call(self, method: str, path: str, *, params=None, body=None) -> Any:
        """The answer's JSON (None for an empty body)."""
        with self._open(method, path, params=params, body=body) as response:
            try:
                raw = response.read()
            except OSError as exc:
                raise ClientError(f"The answer from {self.base} broke off: {exc}", code=EXIT_UNREACHABLE) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ClientError(f"The panel's answer is not JSON: {raw[:200]!r}", code=EXIT_SERVER) from None

    def get(self, path: str, **params) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.call("POST", path, body=body if body is not None else {})

    def put(self, path: str, body: dict | None = None) -> Any:
        return self.call("PUT", path, body=body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def download(self, path: str, out: BinaryIO, *, chunk: int = 1024 * 1024) -> tuple[int, str]:
        """A file's bytes, written to `out` as they come: (how many, their SHA-256)."""
        digest, size = hashlib.sha256(), 0
        with self._open("GET", path, timeout=300) as response:
            while True:
                try:
                    part = response.read(chunk)
                except OSError as exc:
                    raise ClientError(f"The download from {self.base} broke off: {exc}", code=EXIT_UNREACHABLE) from None
                if not part:
                    return size, digest.hexdigest()
                digest.update(part)
                size += len(part)
                out.write(part)

    def pages(self, path: str, **params) -> Iterator[dict]:
        """Every result of a paged list, following `next` (its query only: the base stays ours)."""
        while True:
            page = self.get(path, **params)
            yield from page.get("results", [])
            following = page.get("next")
            if not following:
                return
            params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(following).query))

    def lines(self, path: str, *, timeout: float | None = None, **params) -> Iterator[bytes]:
        """A text answer, a line at a time as it comes (a followed log)."""
        with self._open("GET", path, params=params, timeout=timeout) as response:
            while True:
                try:  # bounded: the panel cuts a line at 16,384 characters; whatever answers may not
                    line = response.readline(MAX_LINE_BYTES)
                except OSError as exc:
                    raise ClientError(f"The answer from {self.base} broke off: {exc}", code=EXIT_UNREACHABLE) from None
                if not line:
                    return
                yield line
