"""Uploads with a size limit enforced while they arrive: nothing larger is ever written.

A view decorated with limited_upload judges the declared length first (none, as in a chunked
upload, is refused: Django would read nothing and the view would see no file), then counts each
file as the parser reads it and stops it at the limit. Under WSGI (gunicorn serves the pages)
that is as the body comes off the socket. Under ASGI (Daphne, when one port serves the pages
too) Django reads the whole body into a temporary file before any view runs, so UploadLimit
makes the same judgement in front of it and counts the body there.

The parser is Django's, with two changes: a file keeps its name as sent, for the view to judge
(Django's drops any path before it, NUL and unprintable characters, and skips a file named
`..`: the panel judges names and never rewrites them), and a body that ends before the form's
closing boundary (a Content-Length shorter than the body, a connection that broke) is noticed,
where Django would only find the file missing.
"""

import hashlib
import os
from collections.abc import Callable
from functools import wraps

from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParser
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt, csrf_protect

FRAMING = 1 << 20  # what a form may hold besides its file: boundaries, part headers, other fields


def length_problem(content_length: str | None, transfer_encoding: str | None, most: int) -> tuple[int, str] | None:
    """(status, message) for a body whose length, as declared, already refuses it."""
    if "chunked" in (transfer_encoding or "").lower():
        return 411, "The upload did not declare its length: send it with a Content-Length (a chunked upload is not taken).\n"
    if not content_length:
        return None
    try:
        declared = int(content_length)
    except ValueError:
        declared = -1
    if declared < 0:
        return 400, "The upload's Content-Length is not a number of bytes.\n"
    if declared > most + FRAMING:
        return 413, f"The upload is larger than the limit of {most} bytes.\n"
    return None


def _plain(status: int, text: str) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


class _Watched:
    """A request body as the parser reads it, watched for the form's closing delimiter."""

    def __init__(self, stream, boundary: bytes):
        self.stream = stream
        self.closing = b"\r\n--" + boundary + b"--"
        self.tail = b"\r\n"  # the first delimiter of a body needs no line break before it
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if not self.ended and data:
            n = len(self.closing)
            self.ended = self.closing in self.tail + data[:n] or self.closing in data
            self.tail = data[-n:] if len(data) >= n else (self.tail + data)[-n:]
        return data


class _Parser(MultiPartParser):
    """Django's parser, telling `handler` each file's name as sent before it is sanitised."""

    def __init__(self, *args, handler: "LimitedUploadHandler"):
        super().__init__(*args)
        self.handler = handler

    def sanitize_file_name(self, file_name):
        self.handler.next_name = file_name
        # Django's cleaned name stays the temporary file's; "unnamed" where it would skip the file.
        return super().sanitize_file_name(file_name) or "unnamed"


class LimitedUploadHandler(FileUploadHandler):
    """First of a request's upload handlers: parses the body with _Parser (once), stops a file as
    soon as it passes `limit` bytes, and keeps what the view needs to say what went wrong."""

    def __init__(self, request: HttpRequest, limit: int):
        super().__init__(request)
        self.http_request = request
        self.limit = limit
        self.too_large = False
        self.body: _Watched | None = None  # set once the body is parsed as a form
        self.sent_names: dict[str, str] = {}  # form field: its (last) file's name as sent
        self.next_name = ""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        """Django's hook for a handler that parses the body itself: it is parsed by _Parser,
        whose own loop calls this again (and gets None: go on as usual)."""
        if self.body is not None:
            return None  # the inner parse: Django's own loop
        self.body = _Watched(input_data, boundary)
        return _Parser(META, self.body, self.http_request.upload_handlers, encoding, handler=self).parse()

    def new_file(self, field_name, file_name, *args, **kwargs):
        super().new_file(field_name, file_name, *args, **kwargs)
        self.sent_names[field_name] = self.next_name or file_name

    def receive_data_chunk(self, raw_data, start):
        if start + len(raw_data) > self.limit:
            self.too_large = True
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size):
        return None


def limited_upload(limit: Callable[[], int]):
    """Decorate a view that takes a file: the limit applies before anything is read (the upload
    handlers must be in place before the CSRF check reads the body, hence csrf_protect inside).
    A request whose declared length refuses it is answered at once (413, or 411 without one)."""

    def decorator(view):
        protected = csrf_protect(view)

        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            most = limit()
            refused = length_problem(request.META.get("CONTENT_LENGTH"), request.META.get("HTTP_TRANSFER_ENCODING"), most)
            if refused:
                return _plain(*refused)
            handler = LimitedUploadHandler(request, most)
            request.upload_handlers.insert(0, handler)
            request.limited_upload = handler  # type: ignore[attr-defined]
            return protected(request, *args, **kwargs)

        wrapper.upload_limit = limit  # type: ignore[attr-defined] # for UploadLimit, under ASGI
        return wrapper

    return decorator


def upload_problem(request: HttpRequest, *, what: str) -> str | None:
    """Why the upload of a limited_upload view cannot be taken ("The file is larger than..."),
    or None: then a missing file is one the user did not choose."""
    handler: LimitedUploadHandler = request.limited_upload  # type: ignore[attr-defined]
    request.FILES  # noqa: B018 - parses the body if nothing has yet
    if handler.too_large:
        return f"{what} is larger than the limit of {handler.limit} bytes; nothing was written."
    if handler.body is not None and not handler.body.ended:
        return (
            "The upload stopped short: the form ended before its closing boundary (a Content-Length shorter than "
            "what was sent, or a connection that broke off); nothing was written."
        )
    return None


def sent_name(request: HttpRequest, field: str) -> str:
    """The name the file in `field` was sent with, unchanged (to be judged, never rewritten)."""
    return request.limited_upload.sent_names.get(field, "")  # type: ignore[attr-defined]


class UploadLimit:
    """ASGI middleware in front of Django for the views of limited_upload: their declared length
    is judged before a byte is read, and the body is counted while it arrives; past the limit
    (and the form's framing) Django is told the client left, and the answer is a 413."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        most = _limit_of(scope)
        if most is None:
            return await self.app(scope, receive, send)
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        refused = length_problem(headers.get(b"content-length"), headers.get(b"transfer-encoding"), most)
        if refused is None:
            counted = _Counted(receive, most + FRAMING)
            await self.app(scope, counted, send)
            if not counted.over:
                return
            refused = 413, f"The upload is larger than the limit of {most} bytes.\n"
        body = refused[1].encode()
        await send({"type": "http.response.start", "status": refused[0], "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": body})


def _limit_of(scope) -> int | None:
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    try:
        match = resolve(scope["path"].removeprefix(scope.get("root_path") or ""))
    except Resolver404:
        return None
    limit = getattr(match.func, "upload_limit", None)
    return limit() if limit is not None else None


class _Counted:
    """An ASGI receive() that counts the body and ends it as a disconnect past `most` bytes."""

    def __init__(self, receive, most: int):
        self.receive, self.most, self.seen, self.over = receive, most, 0, False

    async def __call__(self):
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.most:
                self.over = True
                return {"type": "http.disconnect"}
        return message


class TooLarge(Exception):
    """More bytes came than the limit allows."""


def copy_limited(source, fd: int, *, limit: int) -> tuple[int, str]:
    """Copy `source` (a file object) into the open file `fd`, at most `limit` bytes (TooLarge
    past it), and flush it to disk. Returns (size, sha256 of what was written)."""
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"larger than the limit of {limit} bytes")
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    os.fsync(fd)
    return size, digest.hexdigest()
