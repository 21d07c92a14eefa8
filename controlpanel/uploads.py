"""Uploads with a size limit enforced while they arrive: nothing larger is ever written."""

import hashlib
import os
from collections.abc import Callable
from functools import wraps

from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt, csrf_protect


class LimitedUploadHandler(FileUploadHandler):
    """Stops reading a file as soon as it passes `limit` bytes; the view sees `too_large`."""

    def __init__(self, request: HttpRequest, limit: int):
        super().__init__(request)
        self.limit = limit
        self.too_large = False

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
    A request whose declared length is over the limit is refused at once with a 413."""

    def decorator(view):
        protected = csrf_protect(view)

        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            most = limit()
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > most + 1024 * 1024:
                return HttpResponse(f"The upload is larger than the limit of {most} bytes.\n", status=413, content_type="text/plain")
            handler = LimitedUploadHandler(request, most)
            request.upload_handlers.insert(0, handler)
            request.upload_too_large = lambda: handler.too_large  # type: ignore[attr-defined]
            return protected(request, *args, **kwargs)

        return wrapper

    return decorator


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
