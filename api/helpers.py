"""What the API's second slice of views shares (backups, checkpoints, transfers, incidents): ids
read from a path, pages of a list, downloads that ignore the Accept header, and streams that keep
the request's audit attribution while they run after the view has returned."""

from collections.abc import Iterator

from django.db.models import QuerySet
from rest_framework import exceptions
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

from audit.services import attributed
from controlpanel.uploads import LimitedUploadHandler, length_problem, upload_problem

from .parsers import PayloadTooLarge

PAGE_SIZE = 50


def id_or_404(pk: int | str, what: str) -> int:
    """A path's id as a number; 404 (as for a row that does not exist) for anything else."""
    if isinstance(pk, int):
        return pk
    if not (pk.isascii() and pk.isdigit() and len(pk) < 19):
        raise exceptions.NotFound(f"No such {what}.")
    return int(pk)


def page_of(request: Request, queryset: QuerySet, number: int, serialize) -> dict:
    """One page of PAGE_SIZE rows of `queryset` (already ordered), as the sandbox list pages."""
    rows = list(queryset[(number - 1) * PAGE_SIZE : number * PAGE_SIZE + 1])
    more = len(rows) > PAGE_SIZE
    url = request.build_absolute_uri()
    return {
        "count": queryset.count(),
        "next": replace_query_param(url, "page", number + 1) if more else None,
        "previous": replace_query_param(url, "page", number - 1) if number > 1 else None,
        "results": serialize(rows[:PAGE_SIZE]),
    }


class DownloadNegotiation:
    """For a view that answers with a file: what the client Accepts does not matter (the file is
    what it is, and a refusal is JSON), so no Accept header makes a 406."""

    def perform_content_negotiation(self, request, force=False):
        return super().perform_content_negotiation(request, force=True)  # type: ignore[misc]


class Attributed:
    """An iterator of chunks whose every step (and its close) runs under the request's audit
    attribution: a service that audits when its stream ends (transfer.download) does so after
    the view has returned, when the request's own `attributed` block is over."""

    def __init__(self, chunks, details: dict[str, str] | None):
        self.chunks, self.details = chunks, details
        self._it: Iterator[bytes] = iter(chunks)

    def __iter__(self) -> "Attributed":
        return self

    def __next__(self) -> bytes:
        if self.details is None:
            return next(self._it)
        with attributed(self.details):
            return next(self._it)

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is None:
            return
        if self.details is None:
            close()
            return
        with attributed(self.details):
            close()


class LengthRequired(exceptions.APIException):
    status_code = 411
    default_detail = "The upload did not declare its length: send it with a Content-Length (a chunked upload is not taken)."
    default_code = "length_required"


class MultipartUpload:
    """For a view that takes one file as multipart/form-data: the pages' own limits
    (controlpanel.uploads), unchanged. Before the body is read, its declared length is judged
    (411 without one, 400 for one that is not a number, 413 past the limit) and the pages' upload
    handler goes first, counting the file as it arrives and stopping it at the limit; after it,
    `upload_refused` says whether the file was cut (413) or the form stopped short (400).
    `upload_limit` also tells the ASGI middleware (UploadLimit) to judge it before Django reads."""

    parser_classes = [MultiPartParser]
    upload_what = "The file"

    @staticmethod
    def upload_limit() -> int:
        raise NotImplementedError

    @classmethod
    def as_view(cls, **initkwargs):
        view = super().as_view(**initkwargs)  # type: ignore[misc]
        view.upload_limit = cls.upload_limit  # controlpanel.uploads.UploadLimit reads it off the URL's view
        return view

    def limit_upload(self, request: Request) -> None:
        most = self.upload_limit()
        refused = length_problem(request.META.get("CONTENT_LENGTH"), request.META.get("HTTP_TRANSFER_ENCODING"), most)
        if refused is not None:
            status, text = refused
            text = text.strip()
            raise LengthRequired(text) if status == 411 else PayloadTooLarge(text) if status == 413 else exceptions.ParseError(text)
        http = request._request
        handler = LimitedUploadHandler(http, most)
        http.upload_handlers.insert(0, handler)
        http.limited_upload = handler  # type: ignore[attr-defined]

    def upload_refused(self, request: Request) -> None:
        """After request.data: raise what the pages say of a file cut at the limit or a form that
        stopped short (nothing was written either way)."""
        http = request._request
        problem = upload_problem(http, what=self.upload_what)
        if problem is not None:
            raise PayloadTooLarge(problem) if http.limited_upload.too_large else exceptions.ParseError(problem)  # type: ignore[attr-defined]

    def get_exception_handler(self):
        handler = super().get_exception_handler()  # type: ignore[misc]

        def handle(exc, context):
            response = handler(exc, context)
            if isinstance(exc, exceptions.UnsupportedMediaType) and response is not None:
                response.data = {"detail": str(exc.detail).replace("Send application/json.", "Send multipart/form-data.")}
            return response

        return handle
