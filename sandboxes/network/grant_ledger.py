"""Which listed names hold each name grant of the allowlist bridge, and until when.

The set (sandboxes.network) has one element per (sandbox address, port, destination), with one
timeout and one comment: two listed names that answer with the same address share it. This
ledger keeps each name's own expiry beside it, so that the element lasts as long as the longest
of the names still listed (a short TTL of one does not cut the other's connections), and taking
one name off a list leaves the address to the others (sandboxes.services.allowlist).

A SQLite file beside the grants' lock, written under that lock (ipset.grants_lock): the resolver
(in the events watcher) and sync_grants (web, workers) are different processes; the resolver's
check of a cached answer only reads it, in a transaction of its own. Each
use is one transaction, committed only when the set was changed as it says. Expired rows go at
every write; all go when the set is made again (iptables.apply, iptables.remove), since its elements
went with it, and when the file is found damaged.
"""

import contextlib
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings

from . import allowlist, bridges, commands, ipset

MAX_NAMES = 8  # names kept for one element; past them the soonest to expire is forgotten
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS holder (
    source TEXT NOT NULL, port INTEGER NOT NULL, destination TEXT NOT NULL,
    sandbox INTEGER NOT NULL, name TEXT NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (source, port, destination, sandbox, name))""",
    "CREATE INDEX IF NOT EXISTS holder_until ON holder (until)",
)

COLUMNS = "source, port, destination, sandbox, name, until"
Element = tuple[str, int, str]  # (sandbox address, port, destination network)


@dataclass(frozen=True)
class Holder:
    sandbox: int
    name: str
    until: float  # wall-clock seconds: the ledger outlives the process that wrote it

    def seconds_left(self) -> int:
        return max(1, math.ceil(self.until - time.time()))


def path() -> str:
    return os.path.join(settings.VAR_DIR, f"grants-{bridges.allowlist_bridge().bridge}.sqlite3")


@contextmanager
def opened() -> Iterator["Ledger"]:
    """The ledger in one transaction: committed when the block ends without an error. Its own
    failures are the rules' (commands.EgressError): no grant is made without it. A damaged file is
    removed, so the next use starts afresh (it holds only expiries; the set holds the grants)."""
    conn = None
    try:
        conn = sqlite3.connect(path(), timeout=10)
        with conn:
            for statement in SCHEMA:
                conn.execute(statement)
            yield Ledger(conn)
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
            forget_all()
        raise commands.EgressError(f"the grants' ledger {path()}: {exc}") from exc
    finally:
        if conn is not None:
            conn.close()


def forget_all() -> None:
    """Everything goes: the set was made again, or the file is damaged. Its journal goes with it,
    lest it be played back into a new file."""
    for name in (path(), path() + "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def longest(holders: Iterable[Holder], *, sandbox: int, port: int, entries: list[allowlist.Entry]) -> Holder | None:
    """Of an element's holders, the one that lasts longest among the names the sandbox's list
    still gives that port; None when no name still listed holds it."""
    now = time.time()
    listed = [h for h in holders if h.sandbox == sandbox and h.until > now and port in allowlist.ports_for(h.name, entries)]
    return max(listed, key=lambda h: h.until, default=None)


def grant_for(element: Element, holders: Iterable[Holder], *, sandbox: int, entries: list[allowlist.Entry]) -> ipset.Grant | None:
    """The element as the holders still listed would have it (the longest expiry, that name's
    comment), or None when no name still listed holds it."""
    best = longest(holders, sandbox=sandbox, port=element[1], entries=entries)
    return None if best is None else ipset.Grant(element[0], element[1], element[2], best.name, best.seconds_left())


class Ledger:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def hold(self, source: str, holder: Holder, pairs: list[tuple[str, int]]) -> None:
        """The holder's name holds each (destination, port) for `source` until its `until`, or
        longer if an earlier answer of it said so (the sandbox may still use that one)."""
        rows = [(source, port, dst, holder.sandbox, holder.name, holder.until) for dst, port in pairs]
        self.conn.execute("DELETE FROM holder WHERE until <= ?", (time.time(),))
        self.conn.executemany(
            "INSERT INTO holder VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET until = max(until, excluded.until)", rows
        )
        self.conn.executemany(
            "DELETE FROM holder WHERE rowid IN (SELECT rowid FROM holder WHERE source = ? AND port = ? AND destination = ?"
            " ORDER BY until DESC LIMIT -1 OFFSET ?)",
            [(source, port, dst, MAX_NAMES) for dst, port in pairs],
        )

    def holders_of(self, source: str, destinations: list[str]) -> dict[Element, list[Holder]]:
        """The holders of the source's elements to these destinations (at most an answer's 64)."""
        marks = ", ".join("?" * len(destinations))
        query = f"SELECT {COLUMNS} FROM holder WHERE source = ? AND destination IN ({marks}) AND until > ?"  # noqa: S608 - only COLUMNS and ? marks are spliced in; the values are bound
        return _by_element(self.conn.execute(query, (source, *destinations, time.time())))

    def everything(self) -> dict[Element, list[Holder]]:
        query = f"SELECT {COLUMNS} FROM holder WHERE until > ?"  # noqa: S608 - only COLUMNS is spliced in; the value is bound
        return _by_element(self.conn.execute(query, (time.time(),)))

    def keep_only(self, clients: dict[str, tuple[int, list[allowlist.Entry]]]) -> None:
        """Forget every holder that is no longer a sandbox's listed name at that address."""
        gone = [
            (source, port, dst, h.sandbox, h.name)
            for (source, port, dst), holders in self.everything().items()
            for h in holders
            if source not in clients or clients[source][0] != h.sandbox or port not in allowlist.ports_for(h.name, clients[source][1])
        ]
        self.conn.execute("DELETE FROM holder WHERE until <= ?", (time.time(),))
        self.conn.executemany("DELETE FROM holder WHERE source = ? AND port = ? AND destination = ? AND sandbox = ? AND name = ?", gone)


def _by_element(rows: Iterable[tuple]) -> dict[Element, list[Holder]]:
    found: dict[Element, list[Holder]] = {}
    for source, port, dst, sandbox, name, until in rows:
        found.setdefault((source, port, dst), []).append(Holder(sandbox, name, until))
    return found
