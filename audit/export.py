"""Exporting the audit trail (CSV, JSON Lines) in constant memory, and checking an exported file.

A JSON Lines export is three kinds of line:

    {"type": "header", "format": 1, "exported_at": ..., "filters": {...}, "chain_head": {"seq": N, "hash": ...}}
    {"type": "event", "seq": ..., "prev_hash": ..., "hash": ..., ...every field the HMAC covers...}
    {"type": "end", "count": N, "digest": HMAC(key, header line + every event's hash, in order)}

`verify_file` recomputes each event's HMAC from its fields (an edited event fails), checks that
events that follow each other in the chain link up, and recomputes the end's digest (an event
removed, added or moved, or a header changed, fails). The CSV holds the same events and ends
with the same digest; it is for spreadsheets, the JSON Lines file for checking.
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

from .models import AuditEvent, payload
from .services import audit_key

FORMAT = 1
CHUNK = 2000


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


def _event_dict(row: dict) -> dict:
    row["type"] = "event"
    row["created_at"] = row["created_at"].isoformat()
    row["sandbox_uuid"] = str(row["sandbox_uuid"]) if row["sandbox_uuid"] else None
    return row


def _header(filters: dict, scope: str) -> dict:
    head = AuditEvent.objects.order_by("-seq").values("seq", "hash").first() or {"seq": 0, "hash": ""}
    return {
        "type": "header",
        "format": FORMAT,
        "exported_at": timezone.now().isoformat(),
        "scope": scope,
        "filters": filters,
        "chain_head": head,
    }


def _line(value: dict) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _rows(events: QuerySet[AuditEvent]) -> Iterator[dict]:
    # In `seq` order, a chunk at a time, as plain values: memory stays flat whatever the count.
    for row in events.order_by("seq").values(*COLUMNS).iterator(chunk_size=CHUNK):
        yield _event_dict(row)


def jsonl_lines(events: QuerySet[AuditEvent], *, filters: dict, scope: str = "every event") -> Iterator[str]:
    """`scope` says which events the exporter could see (a non-superuser's export holds only
    their teams'): `verify --file` repeats it, so a partial file is never taken for the trail."""
    key = audit_key()
    header = _line(_header(filters, scope))
    digest = hmac.new(key, header.encode(), hashlib.sha256)
    yield header + "\n"
    count = 0
    buffer = []
    for row in _rows(events):
        digest.update(row["hash"].encode())
        buffer.append(_line(row))
        count += 1
        if len(buffer) >= 500:
            yield "\n".join(buffer) + "\n"
            buffer = []
    if buffer:
        yield "\n".join(buffer) + "\n"
    yield _line({"type": "end", "count": count, "digest": digest.hexdigest()}) + "\n"


def csv_lines(events: QuerySet[AuditEvent], *, filters: dict, scope: str = "every event") -> Iterator[str]:
    key = audit_key()
    header = _line(_header(filters, scope))
    digest = hmac.new(key, header.encode(), hashlib.sha256)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["type", *COLUMNS])
    writer.writerow(["header", header] + [""] * (len(COLUMNS) - 1))
    count = 0
    for row in _rows(events):
        digest.update(row["hash"].encode())
        writer.writerow(["event", *[_cell(json.dumps(row[f], sort_keys=True) if f == "details" else row[f]) for f in COLUMNS]])
        count += 1
        if count % 500 == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    writer.writerow(["end", json.dumps({"count": count, "digest": digest.hexdigest()})] + [""] * (len(COLUMNS) - 1))
    yield out.getvalue()


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


def verify_lines(lines: Iterable[str]) -> FileCheck:
    """Check a JSON Lines export (see the module docstring); names the first problem."""
    key = audit_key()
    it = iter(lines)
    try:
        header_line = next(it).rstrip("\n")
        header = json.loads(header_line)
    except (StopIteration, ValueError, RecursionError):
        return FileCheck(0, "The file does not start with an export header.", None)
    if not isinstance(header, dict) or header.get("type") != "header" or header.get("format") != FORMAT or _line(header) != header_line:
        return FileCheck(0, "The first line is not an export header of a known format.", None)
    digest = hmac.new(key, header_line.encode(), hashlib.sha256)
    count, previous, end = 0, None, None
    for number, raw in enumerate(it, start=2):
        if end is not None:
            return FileCheck(count, f"Line {number} follows the end line.", header.get("chain_head"))
        try:
            row = json.loads(raw)
        except (ValueError, RecursionError):
            return FileCheck(count, f"Line {number} is not JSON.", header.get("chain_head"))
        if not isinstance(row, dict) or _line(row) != raw.rstrip("\n"):
            # Only the exact text the export wrote: no added, repeated or reordered keys, no
            # other spelling of a value (what the HMAC covers is parsed values, not text).
            return FileCheck(count, f"Line {number} is not as the export wrote it.", header.get("chain_head"))
        if row.get("type") == "end":
            end = row
            continue
        if row.get("type") != "event":
            return FileCheck(count, f"Line {number} is neither an event nor the end.", header.get("chain_head"))
        try:
            expected = _expected_hash(key, row)
        except (KeyError, TypeError, ValueError):
            return FileCheck(count, f"Line {number} lacks a field of an event.", header.get("chain_head"))
        if not hmac.compare_digest(expected, str(row.get("hash"))):
            return FileCheck(
                count,
                f"Event #{row.get('seq')} (line {number}) was altered: its HMAC does not match its contents.",
                header.get("chain_head"),
            )
        if previous is not None:
            if row["seq"] <= previous["seq"]:
                return FileCheck(count, f"Event #{row['seq']} (line {number}) is out of order.", header.get("chain_head"))
            if row["seq"] == previous["seq"] + 1 and row["prev_hash"] != previous["hash"]:
                return FileCheck(
                    count, f"Event #{row['seq']} (line {number}) does not follow #{previous['seq']}.", header.get("chain_head")
                )
        head = header.get("chain_head") or {}
        if row["seq"] > int(head.get("seq") or 0):
            return FileCheck(count, f"Event #{row['seq']} is newer than the chain's head at export time.", head)
        digest.update(row["hash"].encode())
        previous = row
        count += 1
    if end is None:
        return FileCheck(count, "The file has no end line: it was cut short.", header.get("chain_head"))
    if end.get("count") != count or not hmac.compare_digest(str(end.get("digest")), digest.hexdigest()):
        return FileCheck(
            count, "The events in the file are not those exported: some were removed, added or reordered.", header.get("chain_head")
        )
    return FileCheck(count, None, header.get("chain_head"), str(header.get("scope", "")), header.get("filters"))
