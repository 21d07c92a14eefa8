"""The decision stream: every allow/deny decision about a sandbox's traffic (EgressDenial rows:
the host's rules, the panel's resolver, the credential proxy and its HTTP rules) as JSON Lines,
one object a line, oldest first, for the page's download and the API (read, or followed).

A read is bounded (`limit` rows, at most MAX_ROWS) and taken a chunk at a time by id, so memory
stays flat; a client resumes with `after` set to the last line's `id`. A follow (the live tail)
sends the backlog, then polls for new rows every POLL_SECONDS, closing its database connection
while it waits (none is held between polls); it ends when the client goes away, when the
reader may no longer see the sandbox, or after FOLLOW_SECONDS (then ask again with `after`).
A row's `count` may still grow after it was sent (alike attempts within a second are counted
on one row): the stream is for following, the card for the totals."""

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from django.db import connection
from django.db.models import QuerySet

from .models import DecisionKind, EgressDenial

MAX_ROWS = 100_000
DEFAULT_ROWS = 10_000
CHUNK = 500
POLL_SECONDS = 0.5
FOLLOW_SECONDS = 300
RECHECK_SECONDS = 5

# The fields of a line, in order, with their type and meaning (the README's table is made of these).
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("id", "integer", "the row's id, increasing: resume after it with `after`"),
    ("at", "string", "when (RFC 3339, UTC, microseconds)"),
    ("sandbox", "string", "the sandbox's name"),
    ("kind", "string", "the layer that decided: connection (the host's rules), dns (the panel's resolver), proxy, http"),
    ("allowed", "boolean", "true for an allowed request (the proxy logs those too), false for a refusal"),
    ("destination", "string or null", "the IPv4 address asked for (null for a refused name)"),
    ("name", "string", "the host name asked for, when known (a DNS question, a proxied request's host)"),
    ("port", "integer or null", "the destination port (53 for a DNS question)"),
    ("protocol", "string", "tcp, udp, icmp, dns, or unlogged (the panel-wide limit of the log was reached)"),
    ("method", "string", "the HTTP method, for kind http or proxy"),
    ("path", "string", "the HTTP path, for kind http or proxy"),
    ("reason", "string", "why, in words, when the layer said"),
    ("count", "integer", "alike attempts within a second, counted on this row"),
)


def decisions(
    *,
    sandbox_id: int,
    kind: str = "",
    allowed: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet:
    """The sandbox's decisions, oldest first, narrowed by kind, outcome and time."""
    rows = EgressDenial.objects.filter(sandbox_id=sandbox_id)
    if kind:
        rows = rows.filter(kind=kind)
    if allowed is not None:
        rows = rows.filter(allowed=allowed)
    if since is not None:
        rows = rows.filter(at__gte=since)
    if until is not None:
        rows = rows.filter(at__lt=until)
    return rows.order_by("pk")


def as_line(row: dict, sandbox_name: str) -> bytes:
    import json

    value = {name: row.get(name) for name, _type, _meaning in FIELDS}
    value["sandbox"] = sandbox_name
    value["at"] = row["at"].isoformat().replace("+00:00", "Z")
    return (json.dumps(value, separators=(",", ":")) + "\n").encode()


COLUMNS = [name for name, _type, _meaning in FIELDS if name != "sandbox"]


def jsonl(
    rows: QuerySet,
    *,
    sandbox_name: str,
    after: int = 0,
    limit: int = DEFAULT_ROWS,
    follow: bool = False,
    still_allowed: Callable[[], bool] = lambda: True,
    gone: Callable[[], bool] = lambda: False,
    on_end: Callable[[], None] = lambda: None,
) -> Iterator[bytes]:
    """The lines of `rows` after id `after`, a chunk at a time; with `follow`, then the new ones
    as they are written (see the module's docstring). `on_end` runs however it ends."""
    sent, deadline, checked = 0, time.monotonic() + FOLLOW_SECONDS, time.monotonic()
    try:
        while sent < limit:
            chunk = list(rows.filter(pk__gt=after).values(*COLUMNS)[: min(CHUNK, limit - sent)])
            for row in chunk:
                yield as_line(row, sandbox_name)
                after, sent = row["id"], sent + 1
            if len(chunk) == CHUNK:
                continue  # the backlog: the next chunk at once
            if not follow:
                return
            connection.close()  # none held while waiting: a follow lasts minutes
            if gone() or time.monotonic() > deadline:
                return
            if time.monotonic() - checked > RECHECK_SECONDS:
                if not still_allowed():
                    return
                checked = time.monotonic()
            time.sleep(POLL_SECONDS)
    finally:
        on_end()


KINDS = list(DecisionKind.values)


def each_in_a_thread(lines: Iterator[bytes]):
    """Under ASGI (Daphne): each step of `lines` in a worker thread, its database connection
    closed after it, so a follow holds neither the sync views' thread nor a connection; Django
    cancels this when the client goes away."""
    from asgiref.sync import sync_to_async

    def step() -> bytes | None:
        try:
            return next(lines, None)
        finally:
            connection.close()

    async def stream():
        try:
            while (chunk := await sync_to_async(step, thread_sensitive=False)()) is not None:
                yield chunk
        finally:
            with contextlib.suppress(ValueError):  # "generator already executing": it ends by itself
                lines.close()  # type: ignore[attr-defined]

    return stream()


NDJSON = "application/x-ndjson"


def response(request, sandbox, query: dict, *, still_allowed: Callable[[], bool], on_end: Callable[[], None] = lambda: None):
    """The streamed answer for the page and the API alike: `query` as DecisionQueryForm (or the
    API's serializer) cleaned it."""
    from django.core.handlers.asgi import ASGIRequest
    from django.http import StreamingHttpResponse

    from controlpanel.http import client_gone

    rows = decisions(
        sandbox_id=sandbox.pk,
        kind=query.get("kind") or "",
        allowed=query.get("allowed"),
        since=query.get("since"),
        until=query.get("until"),
    )
    follow = bool(query.get("follow"))
    client = request.META.get("gunicorn.socket")
    lines = jsonl(
        rows,
        sandbox_name=sandbox.name,
        after=query.get("after") or 0,
        limit=query.get("limit") or DEFAULT_ROWS,
        follow=follow,
        still_allowed=still_allowed,
        gone=lambda: client_gone(client),
        on_end=on_end,
    )
    answer = StreamingHttpResponse(each_in_a_thread(lines) if isinstance(request, ASGIRequest) else lines, content_type=NDJSON)
    answer["X-Content-Type-Options"] = "nosniff"
    answer["Cache-Control"] = "no-store"
    if follow:
        answer["X-Accel-Buffering"] = "no"  # a proxy in front passes lines on as they come
    else:
        answer["Content-Disposition"] = f'attachment; filename="{sandbox.name}-decisions.jsonl"'
    return answer
