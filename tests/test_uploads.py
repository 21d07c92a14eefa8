"""Uploads under ASGI (Daphne, when one port serves the pages too): Django reads a request's
whole body into a temporary file before any view runs, so the limit is kept in front of it, by
the declared length and by counting the body while it arrives, never after it is written."""

import asyncio

import pytest
from django.conf import settings

from controlpanel.asgi import pages

pytestmark = pytest.mark.django_db(transaction=True)

CHUNK = 64 << 10


class Client:
    """One HTTP request to the ASGI app: a body of `size` bytes (None: one that never ends) sent
    as it is asked for; records what was read and what was answered."""

    def __init__(self, size: int | None):
        self.size, self.sent, self.answer, self.ended = size, 0, [], False

    async def receive(self):
        if self.ended:
            await asyncio.Event().wait()  # a client that waits for its answer (cancelled when it comes)
        if self.size is None and self.sent >= 64 * CHUNK:
            return {"type": "http.disconnect"}  # the test's own end: the app kept on reading
        n = CHUNK if self.size is None else min(CHUNK, self.size - self.sent)
        self.sent += n
        more = self.size is None or self.sent < self.size
        self.ended = not more
        return {"type": "http.request", "body": b"x" * n, "more_body": more}

    async def send(self, message):
        self.answer.append(message)

    def status(self) -> int | None:
        return next((m["status"] for m in self.answer if m["type"] == "http.response.start"), None)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.answer if m["type"] == "http.response.body")


def post(path: str, client: Client, headers: list[tuple[bytes, bytes]]) -> Client:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"multipart/form-data; boundary=b"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", settings.PANEL_PORT),
    }
    asyncio.run(asyncio.wait_for(pages(scope, client.receive, client.send), 30))
    return client


def test_an_upload_declared_over_the_limit_is_refused_before_a_byte_is_read(settings):
    settings.TRANSFER_MAX_UPLOAD_BYTES = 1000
    declared = 50 << 20
    client = post("/sandboxes/1/transfer/upload/", Client(declared), [(b"content-length", str(declared).encode())])
    assert client.status() == 413 and b"larger than the limit of 1000 bytes" in client.body()
    assert client.sent == 0


def test_a_chunked_upload_is_refused_before_a_byte_is_read():
    client = post("/backups/import/", Client(None), [(b"transfer-encoding", b"chunked")])
    assert client.status() == 411 and b"Content-Length" in client.body()
    assert client.sent == 0


def test_a_body_longer_than_it_declared_is_cut_at_the_limit(settings):
    settings.TRANSFER_MAX_UPLOAD_BYTES = 1000
    client = post("/sandboxes/1/transfer/upload/", Client(None), [(b"content-length", b"2000")])
    assert client.status() == 413
    assert client.sent <= 1000 + (1 << 20) + CHUNK  # the limit, the form's framing, one message


def test_an_upload_within_the_limit_reaches_the_panel(settings):
    client = post("/sandboxes/1/transfer/upload/", Client(5000), [(b"content-length", b"5000")])
    assert client.sent == 5000 and client.status() == 302  # read whole; the sign-in page is next
