"""Exporting the audit trail (CSV, JSON Lines) in constant memory, and checking an exported file.

A JSON Lines export is three kinds of line:

    {"type": "header", "format": 2, "export_id": ..., "exported_at": ..., "scope": ..., "filters": {...}}
    {"type": "event", "n": 1, ...the event's fields..., "mac": HMAC(key, export id + the line without "mac")}
    {"type": "end", "count": N, "digest": HMAC(key, header line + every event's mac, in order)}

Events are numbered 1..N in the file. Whoever may see the whole trail (a superuser, the CLI) also
gets its positions: each event's `seq`, `prev_hash` and `hash`, and the header's `chain_head`.
A member's export has none of them: the gaps between the sequence numbers of their teams'
events, and the head, would tell them how many events the other teams made. Their file is
checked by its own numbering and seals instead, which need the panel's audit key as the chain does.

The agent's own events in the exported sandboxes (agents.AgentEvent: tool calls, permission
decisions, API requests) follow the audit events as lines of type "agent_event", numbered on
from them and sealed the same way, so the digest and `verify_lines` cover them too; they have no
place in the chain (the agent, not the panel, said them), hence no `seq` or `hash`.

`verify_lines` recomputes each event's seal (an edited event fails) and, where the file has
them, its chain HMAC and links; it names a missing event by its number and place, and
recomputes the end's digest (a header changed fails). The CSV holds the same events for
spreadsheets; it cannot be checked (a spreadsheet rewrites what it saves): the JSON Lines file is.
"""

import csv
import hashlib
import hmac
import io
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from agents.models import EVENT_FIELDS

from .models import AuditEvent, payload
from .selectors import shows_positions
from .services import audit_key

FORMAT = 2
CHUNK = 2000
SEAL = b"audit-export\n"  # keeps a seal apart from a chain HMAC made with the same key
CHAIN_COLUMNS = ["seq", "prev_hash", "hash"]
MAX_LINE = 16 << 20  # characters of one line when checking a file; an event's line is far shorter

COLUMNS = [
    "seq",
    "created_at",
    "actor_name",
    "actor_id",
    "action",
    "target",
    "sandbox_uuid",
    "team_id",
    "source_ip",
    "details",
    "prev_hash",
    "hash",
]


def _columns(chain: bool) -> list[str]:
    return COLUMNS if chain else [c for c in COLUMNS if c not in CHAIN_COLUMNS]


def _header(filters: dict, scope: str, chain: bool) -> dict:
    header = {
        "type": "header",
        "format": FORMAT,
        "export_id": uuid.uuid4().hex,
        "exported_at": timezone.now().isoformat(),
        "scope": scope,
        "filters": filters,
    }
    if chain:
        header["chain_head"] = AuditEvent.objects.order_by("-seq").values("seq", "hash").first() or {"seq": 0, "hash": ""}
    return header


def _line(value: dict) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _seal(key: bytes, export_id: str, body: str) -> str:
    return hmac.new(key, SEAL + export_id.encode() + b"\n" + body.encode(), hashlib.sha256).hexdigest()


def _sealed(events: QuerySet[AuditEvent], key: bytes, header: dict, chain: bool) -> Iterator[dict]:
    """The events in `seq` order, a chunk at a time, as plain values numbered 1..N and sealed:
    memory stays flat whatever the count."""
    columns = _columns(chain)
    rows = events.order_by("seq").values(*columns).iterator(chunk_size=CHUNK)
    for n, row in enumerate(rows, start=1):
        row["type"], row["n"] = "event", n
        row["created_at"] = row["created_at"].isoformat()
        row["sandbox_uuid"] = str(row["sandbox_uuid"]) if row["sandbox_uuid"] else None
        row["mac"] = _seal(key, header["export_id"], _line(row))
        yield row


AGENT_COLUMNS = EVENT_FIELDS  # what the API shows of an event, in its order


def _sealed_agent(agent_events: QuerySet | None, key: bytes, header: dict, after: int) -> Iterator[dict]:
    """The agent's events, oldest first, numbered on from `after` and sealed as the events are."""
    if agent_events is None:
        return
    rows = agent_events.order_by("at", "id").values(*AGENT_COLUMNS, "sandbox__uuid", "sandbox__name", "sandbox__team_id")
    for n, row in enumerate(rows.iterator(chunk_size=CHUNK), start=after + 1):
        line = {k: row[k] for k in AGENT_COLUMNS}
        line.update(type="agent_event", n=n, at=row["at"].isoformat(), cost_usd=str(row["cost_usd"]))
        line.update(sandbox_uuid=str(row["sandbox__uuid"]), sandbox=row["sandbox__name"], team_id=row["sandbox__team_id"])
        line["mac"] = _seal(key, header["export_id"], _line(line))
        yield line


def _all_sealed(events, agent_events, key: bytes, header: dict, chain: bool) -> Iterator[dict]:
    n = 0
    for row in _sealed(events, key, header, chain):
        n = row["n"]
        yield row
    yield from _sealed_agent(agent_events, key, header, n)


def jsonl_lines(
    events: QuerySet[AuditEvent], *, filters: dict, scope: str = "every event", chain: bool = True, agent_events: QuerySet | None = None
) -> Iterator[str]:
    """`scope` says which events the exporter could see (a non-superuser's export holds only
    their teams'): `verify --file` repeats it, so a partial file is never taken for the trail.
    `chain`: whether the exporter may see the trail's positions (superusers, the CLI).
    `agent_events`: the agent's events to add after the audit events (see above)."""
    key = audit_key()
    header = _header(filters, scope, chain)
    header_line = _line(header)
    digest = hmac.new(key, header_line.encode(), hashlib.sha256)
    yield header_line + "\n"
    count = 0
    buffer = []
    for row in _all_sealed(events, agent_events, key, header, chain):
        digest.update(row["mac"].encode())
        buffer.append(_line(row))
        count += 1
        if len(buffer) >= 500:
            yield "\n".join(buffer) + "\n"
            buffer = []
    if buffer:
        yield "\n".join(buffer) + "\n"
    yield _line({"type": "end", "count": count, "digest": digest.hexdigest()}) + "\n"


def csv_lines(
    events: QuerySet[AuditEvent], *, filters: dict, scope: str = "every event", chain: bool = True, agent_events: QuerySet | None = None
) -> Iterator[str]:
    key = audit_key()
    header = _header(filters, scope, chain)
    columns = ["n", *_columns(chain)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["type", *columns])
    writer.writerow(["header", _line(header)] + [""] * (len(columns) - 1))
    count = 0
    for row in _all_sealed(events, agent_events, key, header, chain):
        if row["type"] == "agent_event":  # its fields as one JSON cell, as the header's
            writer.writerow(["agent_event", row["n"], _cell(_line(row))] + [""] * (len(columns) - 2))
        else:
            writer.writerow(["event", *[_cell(json.dumps(row[f], sort_keys=True) if f == "details" else row[f]) for f in columns]])
        count += 1
        if count % 500 == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    writer.writerow(["end", json.dumps({"count": count})] + [""] * (len(columns) - 1))
    yield out.getvalue()


def export_for(user, events: QuerySet[AuditEvent], *, fmt: str, filters: dict) -> Iterator[str]:
    """The export `user` may have of `events` (already limited to what they may see), for the
    audit page and the API alike: the trail's positions only for who may see them
    (selectors.shows_positions); the header says whose events the file holds. The agent's
    events of the sandboxes the user sees, as the same filters narrow them, follow."""
    from agents.selectors import agent_events_for_audit

    chain = shows_positions(user)
    scope = "every event" if chain else f"the events {user.get_username()} may see (their teams')"
    lines = jsonl_lines if fmt == "jsonl" else csv_lines
    return lines(events, filters=filters, scope=scope, chain=chain, agent_events=agent_events_for_audit(user=user, filters=filters))


def _cell(value) -> str:
    """A CSV cell that a spreadsheet shows as text: a value starting like a formula (a user name
    typed at a failed sign-in, say) gets a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# --- checking an exported file -----------------------------------------------------------------


@dataclass
class FileCheck:
    events: int
    problem: str | None
    head: dict | None
    scope: str = ""
    filters: dict | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _expected_hash(key: bytes, row: dict) -> str:
    sandbox_uuid = str(uuid.UUID(row["sandbox_uuid"])) if row["sandbox_uuid"] else None
    data = payload(
        row["seq"],
        row["prev_hash"],
        row["actor_id"],
        row["actor_name"],
        row["action"],
        row["target"],
        sandbox_uuid,
        row["team_id"],
        row["details"],
        row["source_ip"],
        datetime.fromisoformat(row["created_at"]).isoformat(),
    )
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _read_header(it: Iterator[str]) -> tuple[str, dict, str | None]:
    """The header line and its value, or the problem with the file's first line."""
    try:
        header_line = next(it).rstrip("\n")
    except StopIteration:
        return "", {}, "The file is empty."
    if header_line.lstrip("\ufeff").startswith("type,"):
        return (
            header_line,
            {},
            (
                "This is a CSV export, which cannot be checked (a spreadsheet rewrites what it saves). Export the "
                "same events as JSON Lines (the audit page's Export JSON Lines, or `manage.py audit export`) and check that file."
            ),
        )
    try:
        header = json.loads(header_line)
    except (ValueError, RecursionError):
        return header_line, {}, "The file does not start with an export header."
    if isinstance(header, dict) and header.get("type") == "header" and header.get("format") == 1:
        return header_line, {}, "This export is of format 1, from an earlier version of the panel, which this one no longer checks."
    if (
        not isinstance(header, dict)
        or header.get("type") != "header"
        or header.get("format") != FORMAT
        or _line(header) != header_line
        or not isinstance(header.get("export_id"), str)
        or not isinstance(head := header.get("chain_head", {}), dict)
        or type(head.get("seq", 0)) is not int
    ):
        return header_line, {}, "The first line is not an export header of a known format."
    return header_line, header, None


def read_lines(f, limit: int = MAX_LINE) -> Iterator[str]:
    """A file's lines, each read to at most `limit` characters: a file that is not an export
    (a device, one endless line) cannot fill the memory; a line cut there fails as not JSON."""
    while line := f.readline(limit):
        yield line


def _parse(number: int, raw: str) -> tuple[dict, str | None]:
    """Line `number` as a value, if it is exactly as the export wrote it: no added, repeated or
    reordered keys, no other spelling of a value (what a seal covers is values, not text)."""
    try:
        row = json.loads(raw)
    except (ValueError, RecursionError):
        return {}, f"Line {number} is not JSON."
    if not isinstance(row, dict) or _line(row) != raw.rstrip("\n"):
        return {}, f"Line {number} is not as the export wrote it."
    if row.get("type") not in ("event", "agent_event", "end"):
        return {}, f"Line {number} is neither an event nor the end."
    return row, None


class _Checker:
    """One pass over the events of a JSON Lines export: each one's seal, its place in the
    file's numbering and, where the file has them, its place in the chain."""

    def __init__(self, key: bytes, header_line: str, header: dict):
        self.key, self.header = key, header
        self.head: dict | None = header.get("chain_head")
        self.digest = hmac.new(key, header_line.encode(), hashlib.sha256)
        self.count = 0
        self.previous: dict | None = None
        self.gap: tuple[int, int, int] | None = None  # the first numbers missing, and the line after them

    def result(self, problem: str | None) -> FileCheck:
        return FileCheck(self.count, problem, self.head, str(self.header.get("scope", "")), self.header.get("filters"))

    def event(self, number: int, row: dict) -> str | None:
        """What is wrong with the event on line `number`, or None (and it is counted)."""
        n = row.get("n")
        if type(n) is not int:
            return f"Line {number} lacks a field of an event."
        body = _line({k: v for k, v in row.items() if k != "mac"})
        if not hmac.compare_digest(_seal(self.key, str(self.header.get("export_id")), body), str(row.get("mac"))):
            return f"Event {n} of the export (line {number}) was altered: its seal does not match its contents."
        if row.get("type") == "event" and self.previous is not None and self.previous.get("type") != "event":
            return f"Event {n} of the export (line {number}) is out of order: it comes after the agent's events."
        if self.head is not None and row.get("type") == "event" and (problem := self._in_chain(number, row, self.head)):
            return problem
        last = self.previous["n"] if self.previous else 0
        if n <= last:
            return f"Event {n} of the export (line {number}) is out of order: it comes after event {last}."
        if n > last + 1 and self.gap is None:
            self.gap = (last + 1, n - 1, number)  # named at the end, unless a reorder explains it first
        self.digest.update(row["mac"].encode())
        self.previous = row
        self.count += 1
        return None

    def _in_chain(self, number: int, row: dict, head: dict) -> str | None:
        try:
            expected = _expected_hash(self.key, row)
        except (KeyError, TypeError, ValueError):
            return f"Line {number} lacks a field of an event."
        if not hmac.compare_digest(expected, str(row.get("hash"))):
            return f"Event #{row.get('seq')} (line {number}) was altered: its HMAC does not match its contents."
        previous = self.previous
        if previous is not None and row["seq"] <= previous["seq"]:
            return f"Event #{row['seq']} (line {number}) is out of order."
        if previous is not None and row["seq"] == previous["seq"] + 1 and row["prev_hash"] != previous["hash"]:
            return f"Event #{row['seq']} (line {number}) does not follow #{previous['seq']}."
        if row["seq"] > int(head.get("seq") or 0):
            return f"Event #{row['seq']} is newer than the chain's head at export time."
        return None

    def finish(self, end: dict | None, end_number: int) -> str | None:
        if end is None:
            return "The file has no end line: it was cut short."
        if self.gap is not None:
            first, last, line = self.gap
            which = f"Event {first} of the export is" if first == last else f"Events {first} to {last} of the export are"
            return f"{which} missing: removed between lines {line - 1} and {line}."
        counted = end.get("count")
        if type(counted) is int and counted > self.count:
            missing = counted - self.count
            return (
                f"The end line counts {counted} events but the file holds {self.count}: the last {missing} "
                f"{'is' if missing == 1 else 'are'} missing (removed before line {end_number})."
            )
        if counted != self.count or not hmac.compare_digest(str(end.get("digest")), self.digest.hexdigest()):
            return "The events in the file are not those exported: some were removed, added or reordered, or its header was changed."
        return None


def verify_lines(lines: Iterable[str]) -> FileCheck:
    """Check a JSON Lines export (see the module docstring); names the first problem."""
    it = iter(lines)
    header_line, header, problem = _read_header(it)
    if problem is not None:
        return FileCheck(0, problem, None)
    check = _Checker(audit_key(), header_line, header)
    end, end_number = None, 0
    for number, raw in enumerate(it, start=2):
        if end is not None:
            return check.result(f"Line {number} follows the end line.")
        row, problem = _parse(number, raw)
        if problem is None and row["type"] == "end":
            end, end_number = row, number
            continue
        if problem := problem or check.event(number, row):
            return check.result(problem)
    return check.result(check.finish(end, end_number))
