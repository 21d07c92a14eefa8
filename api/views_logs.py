"""GET /api/v1/sandboxes/<id>/logs/: a sandbox's output as plain text, one line per log line,
for scripts and `ccpanel sandbox logs [-f]`.

The same as the page's log view (sandboxes.live.logs): who may see the sandbox may read it
(the viewer role), through the same engine call (`log_stream`), the same number of last lines
(0 to 5,000, 200 unless asked) and the same cut of a long line (MAX_LINE characters and a note;
the page's download has lines whole). Memory stays bounded whatever the container writes: the
engine hands a line of more than 1 MiB in pieces, only the first piece of a line is read
further, cut before it is decoded, and each line is written before the next is read (a slow
client slows this reader, never grows a buffer: Docker keeps the log on its disk).

With follow=1 the answer streams the log as it is written (StreamingHttpResponse, as `make run`
serves the pages: gunicorn). It ends when the container stops, when the client goes away (seen
on its socket within a second, even while the container is quiet), when the user may no longer
see the sandbox or the token stops working (checked every few seconds while lines come), and
after FOLLOW_SECONDS at most: a sync worker must not be held past gunicorn's timeout. A client
that wants more asks again with `since` set to the last line's stamp (timestamps=1 gives them),
as `ccpanel sandbox logs -f` does.
"""

import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Generator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from controlpanel.http import client_gone
from sandboxes import engine, selectors
from sandboxes.live.logs import _line, _nanoseconds, _shown, _since

from . import follows
from . import serializers as s
from .models import ApiToken
from .views import ERRORS, NOT_FOUND, PK, PanelAPIView, _validated

FOLLOW_SECONDS = 300  # a followed log ends after this (gunicorn kills a sync worker busy for 600 s)
RECHECK_SECONDS = 5  # while lines come, the user's right to read them is checked this often
MAX_TAIL = 5000  # as the page's log view
STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")  # anchored: a RegexField only searches


class LogQuery(s.StrictSerializer):
    tail = serializers.IntegerField(required=False, default=200, min_value=0, max_value=MAX_TAIL, help_text="How many last lines.")
    follow = serializers.BooleanField(
        required=False,
        default=False,
        help_text=f"Go on streaming lines as they are written, until the container stops, the client goes away "
        f"or {FOLLOW_SECONDS} s pass (then ask again with `since`).",
    )
    timestamps = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Begin each line with Docker's RFC 3339 stamp and its stream: `<stamp> <stdout|stderr> <text>`.",
    )
    since = serializers.RegexField(
        STAMP_RE,
        required=False,
        max_length=40,
        help_text="Only the lines written after this stamp (a line's stamp, as timestamps=1 gives it); `tail` is then ignored.",
    )


class SandboxLogs(PanelAPIView):
    """A sandbox's output, as text: the last lines, then (follow=1) as it is written."""

    @extend_schema(
        operation_id="sandboxes_logs",
        parameters=[PK, LogQuery],
        responses={
            (200, "text/plain"): OpenApiResponse(
                OpenApiTypes.STR,
                description="One line per log line (cut at 16,384 characters, with a note, as on the page), streamed while follow=1.",
            ),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="A query parameter is refused: each with its messages."),
            409: OpenApiResponse(s.ErrorSerializer, description="The sandbox has no container yet: its log starts when it runs."),
            429: OpenApiResponse(s.ErrorSerializer, description="follow=1 while the user (or the panel) follows as many logs as allowed."),
            503: OpenApiResponse(s.ErrorSerializer, description="Docker does not answer (or the sandbox's host is unreachable)."),
            **ERRORS,
            **NOT_FOUND,
        },
        summary="A sandbox's output (the page's log view), followed on request",
    )
    def get(self, request: Request, pk: str):
        sandbox = self.sandbox_or_404(request, pk)
        query = _validated(LogQuery, request.query_params.dict()).validated_data
        if not sandbox.container_id:
            return Response({"detail": f"{sandbox.name} has no container yet; its log starts when it runs."}, status=409)
        since = query.get("since")
        try:  # a follow holds a page process for minutes: a user may hold only a few (api.follows)
            slot = follows.follow_acquire(user_id=request.user.pk) if query["follow"] else None
        except follows.TooManyFollows as exc:
            return Response({"detail": str(exc)}, status=429, headers={"Retry-After": "30"})
        try:
            stream = engine.engine_for(sandbox).log_stream(
                sandbox.container_id, tail=query["tail"], follow=query["follow"], since=_since(since) if since else None
            )
        except engine.EngineError as exc:
            if slot is not None:
                slot.release()
            return Response({"detail": f"The output is not available: {exc}"}, status=503)
        token = request.auth if isinstance(request.auth, ApiToken) else None
        under_asgi = isinstance(request._request, ASGIRequest)

        def allowed() -> bool:
            try:
                return _still_allowed(user=request.user, token=token, sandbox_id=sandbox.pk)
            finally:
                if under_asgi:
                    connection.close()  # a thread of asgiref's pool: its connection is not reused

        lines = _log_lines(
            stream,
            client=request._request.META.get("gunicorn.socket"),
            allowed=allowed,
            timestamps=query["timestamps"],
            after=_nanoseconds(since) if since else 0,
            slot=slot,
        )
        content = _each_in_a_thread(lines, stream) if under_asgi else lines
        response = StreamingHttpResponse(content, content_type="text/plain; charset=utf-8")
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "no-store"
        if query["follow"]:
            # A proxy in front must pass lines on as they come. Only then: a proxy that buffers a
            # plain read frees the page process at once, whatever the client's pace (a follow's
            # hold on one is capped by api.follows; an unbuffered plain read would not be).
            response["X-Accel-Buffering"] = "no"
        return response


def _still_allowed(*, user, token: ApiToken | None, sandbox_id: int) -> bool:
    """The user may still see the sandbox, and the token (if one was used) still works."""
    if token is not None and not ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True, expires_at__gt=timezone.now()).exists():
        return False
    user.refresh_from_db(fields=["is_active"])
    return user.is_active and selectors.sandbox_get_visible(user=user, pk=sandbox_id) is not None


def _log_lines(
    stream: engine.LogStream, *, client, allowed, timestamps: bool, after: int, slot: follows.Slot | None = None
) -> Generator[bytes]:
    """The stream's lines as text, one line each; the stream is closed and the follow's slot
    given back however this ends (the server closes this generator when the client goes away;
    one closed unread frees its slot when it is dropped)."""
    done = threading.Event()
    threading.Thread(target=_watch, args=(stream, client, done), name="api-log-watch", daemon=True).start()
    continuing: dict[str, bool] = {}
    checked = time.monotonic()
    try:
        for entry in stream:
            if after:
                if _nanoseconds(entry.timestamp) <= after:
                    continue  # Docker's `since` includes lines of that very instant: the client has them
                after = 0
            rest_of_a_line = continuing.get(entry.stream, False)
            continuing[entry.stream] = entry.partial
            if rest_of_a_line:
                continue  # the rest of a line that came in pieces: cut, as on the page
            if time.monotonic() - checked > RECHECK_SECONDS:
                if not allowed():
                    return
                checked = time.monotonic()
            _flag, stamp, text = _line(_shown(entry))
            head = f"{stamp} {entry.stream} " if timestamps else ""
            yield f"{head}{text}\n".encode()
    except engine.EngineError:
        return  # Docker broke off: the answer ends (the client asks again)
    finally:
        done.set()
        stream.close()
        if slot is not None:
            slot.release()


async def _each_in_a_thread(lines: Generator[bytes], stream: engine.LogStream) -> AsyncIterator[bytes]:
    """Under ASGI (Daphne, where the test suite serves the pages; `make run` serves them with
    gunicorn): each line read in a thread of its own, so that a followed log is sent as it comes
    and holds none of the threads other requests need (Django would read a plain generator
    whole, in the one thread its sync views share). Django cancels this when the client goes."""
    step = sync_to_async(lambda: next(lines, None), thread_sensitive=False)
    try:
        while (chunk := await step()) is not None:
            yield chunk
    finally:
        stream.close()  # wakes a read still blocked in its thread, which then ends the generator
        with contextlib.suppress(ValueError):  # "generator already executing": it ends by itself
            lines.close()


def _watch(stream: engine.LogStream, client, done: threading.Event) -> None:
    """Thread: close the stream (which ends the reading above) once FOLLOW_SECONDS have passed
    or the client's socket is closed, whether or not the container writes anything."""
    deadline = time.monotonic() + FOLLOW_SECONDS
    while not done.wait(1.0):
        if time.monotonic() > deadline or _gone(client):
            stream.close()
            return


_gone = client_gone  # a followed log and the decision stream judge the client alike
