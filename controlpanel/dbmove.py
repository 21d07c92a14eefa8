"""Moving a panel's SQLite database to PostgreSQL (`manage.py database move --to postgres://…`).

The SQLite file is only read: the copy runs inside one read transaction on it (a consistent
snapshot; SQLite's IMMEDIATE mode also keeps writers out meanwhile), and into one transaction on
the target, which is new and empty (refused otherwise: nothing is ever overwritten or merged),
from its first table to the move's own audit event (a failure leaves it empty).
Rows go through Django's own serializers in the "python" format, model by model in
INSTALLED_APPS order, a chunk at a time (constant memory, however long the audit trail), with
their primary keys. The python format keeps datetimes, decimals and JSON values as Python values:
the JSON formats would cut datetimes to milliseconds, and the audit chain's HMAC covers the
microseconds. Then every model's row count is compared, and the audit chain is verified on the
target with the same code as `manage.py audit verify`; only then is the move itself audited, on
the target, so the chain carries on there.
"""

import fcntl
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dj_database_url
from django.apps import apps
from django.conf import settings
from django.core import serializers
from django.core.management import call_command
from django.core.management.color import no_style
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, models, transaction

TARGET = "move_target"
CHUNK = 2000


class MoveError(Exception):
    """The move is refused or failed; the message says why and what to do."""


@dataclass
class MoveResult:
    rows: dict[str, int] = field(default_factory=dict)
    events: int = 0
    database_url: str = ""


def copied_models() -> list[type[models.Model]]:
    """Every model with a table of its own (m2m tables included), in INSTALLED_APPS order."""
    return [m for m in apps.get_models(include_auto_created=True) if m._meta.managed and not m._meta.proxy]


def redacted(url: str) -> str:
    """The URL without its password, for messages and the audit trail: the one in the address,
    and any query option that carries one (libpq takes `?password=` and `?sslpassword=` too).
    A URL too odd to take apart is not shown at all."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - ValueError for "user:pass" read as host:port (a "#" or "/" in the password)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
        query = urlencode(
            safe="*", query=[(k, "***" if "pass" in k.lower() else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        )
        return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=""))
    except ValueError:
        return "the target URL"


def panel_running(var_dir: Path) -> str | None:
    """Why the panel's processes seem to run from `var_dir`, or None: the supervisor's lock
    (scripts/supervise.py) is held, or the panel's Redis answers on its socket."""
    lock_path = var_dir / "panel.lock"
    if lock_path.exists():
        with open(lock_path) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return f"{lock_path} is held"
    sock_path = var_dir / "redis.sock"
    if sock_path.exists():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            try:
                sock.connect(str(sock_path))
                return f"the panel's Redis answers on {sock_path}"
            except OSError:
                pass
    return None


def _check_source_and_target(url: str) -> dict[str, Any]:
    source = connections[DEFAULT_DB_ALIAS]
    if source.vendor != "sqlite":
        raise MoveError(f"This panel's database is {source.vendor}, not SQLite: there is nothing to move (a move starts from SQLite).")
    try:
        target = dict(dj_database_url.parse(url))
    except ValueError as exc:
        raise MoveError(f"{redacted(url)} is not a database URL: {exc}") from exc
    if target["ENGINE"] != "django.db.backends.postgresql":
        raise MoveError(f"{redacted(url)} is not a PostgreSQL URL (postgres://user:password@host:port/database).")
    running = panel_running(Path(settings.VAR_DIR))
    if running:
        raise MoveError(f"The panel is running ({running}): stop `make run` (Ctrl-C) first, then move its database.")
    return target


def _register_target(target: dict[str, Any]) -> None:
    configured = connections.configure_settings({DEFAULT_DB_ALIAS: dict(connections.settings[DEFAULT_DB_ALIAS]), TARGET: target})
    connections.settings[TARGET] = configured[TARGET]
    settings.DATABASES[TARGET] = configured[TARGET]


def _refuse_a_used_target() -> None:
    """The target must hold none of the panel's rows: a move never overwrites or merges."""
    conn = connections[TARGET]
    try:
        existing = set(conn.introspection.table_names())
    except DatabaseError as exc:
        raise MoveError(f"Cannot reach the target database: {exc}".strip()) from exc
    used = [m._meta.db_table for m in copied_models() if m._meta.db_table in existing and m._base_manager.using(TARGET).exists()]
    if used:
        raise MoveError(
            f"The target database already holds the panel's rows ({', '.join(used[:5])}{'…' if len(used) > 5 else ''}): "
            "a move goes into a new, empty database only (CREATE DATABASE …), never over or into another."
        )
    if existing:
        # Somebody else's tables: the move's TRUNCATE … CASCADE would empty any of them that
        # refers to a table of the panel's name, and it would mix its tables in with theirs.
        others = sorted(existing)
        raise MoveError(
            f"The target database holds tables already ({', '.join(others[:5])}{'…' if len(others) > 5 else ''}): "
            "a move goes into a new, empty database only (CREATE DATABASE …), never over or into another."
        )


def _chunks(iterable, size: int) -> Iterator[list]:
    it = iter(iterable)
    while chunk := list(islice(it, size)):
        yield chunk


def _copy_model(model: type[models.Model]) -> int:
    """Copy one model's rows, primary keys kept. Inserted as raw rows, like loaddata's saves
    (auto_now_add fields keep their values), but a chunk per query: a save is two queries a row."""
    opts = model._meta
    fields = [f for f in opts.local_concrete_fields if not f.primary_key]
    names = [f.name for f in fields]
    insert_fields = list(opts.local_concrete_fields)
    rows = model._base_manager.using(DEFAULT_DB_ALIAS).order_by("pk").iterator(chunk_size=CHUNK)
    copied = 0
    for chunk in _chunks(rows, CHUNK):
        data = serializers.serialize("python", chunk, fields=names)
        objs = [d.object for d in serializers.deserialize("python", data, using=TARGET)]
        # QuerySet._insert is what Model.save and bulk_create insert with (the stubs leave it out).
        model._base_manager.using(TARGET)._insert(objs, fields=insert_fields, raw=True, using=TARGET)  # type: ignore[attr-defined]
        copied += len(objs)
    return copied


def _copy_all(say: Callable[[str], None]) -> dict[str, int]:
    conn = connections[TARGET]
    every = copied_models()
    # What the target's migrate made itself (content types, permissions, the Default team) gives
    # way to the source's rows, with their keys: foreign keys to them stay right. Its rows'
    # deferred foreign-key checks are run first: in the same transaction, they would otherwise
    # fire at the end against rows the flush removed.
    conn.check_constraints()
    with conn.cursor() as cursor:
        for sql in conn.ops.sql_flush(no_style(), [m._meta.db_table for m in every], allow_cascade=True):
            cursor.execute(sql)
    copied = {}
    for model in every:
        copied[model._meta.label] = _copy_model(model)
        if copied[model._meta.label]:
            say(f"  {model._meta.label}: {copied[model._meta.label]} rows")
    with conn.cursor() as cursor:
        for sql in conn.ops.sequence_reset_sql(no_style(), every):
            cursor.execute(sql)
    conn.check_constraints()
    return copied


def _compare_counts(copied: dict[str, int]) -> None:
    wrong = []
    for model in copied_models():
        here, there = model._base_manager.using(DEFAULT_DB_ALIAS).count(), model._base_manager.using(TARGET).count()
        if here != there or copied.get(model._meta.label) != here:
            wrong.append(f"{model._meta.label}: {here} in SQLite, {there} in PostgreSQL")
    if wrong:
        raise MoveError("The row counts differ: " + "; ".join(wrong))


@contextmanager
def _default_is_target() -> Iterator[None]:
    """The audit services work on the default connection: point it at the target for a while."""
    source = connections[DEFAULT_DB_ALIAS]
    connections[DEFAULT_DB_ALIAS] = connections[TARGET]
    try:
        yield
    finally:
        connections[DEFAULT_DB_ALIAS] = source


def _verify_and_record(url: str, copied: dict[str, int]) -> int:
    from audit.services import audit_record, audit_verify_and_record

    with _default_is_target():
        check = audit_verify_and_record()
        if not check.ok:
            raise MoveError(f"The audit chain does not verify on PostgreSQL after {check.events} events: {check.problem}")
        audit_record(
            actor="cli",
            action="database.moved",
            target=redacted(url),
            details={
                "from": str(connections.settings[DEFAULT_DB_ALIAS]["NAME"]),
                "to": redacted(url),
                "rows": sum(copied.values()),
                "events_verified": check.events,
            },
        )
    return check.events


def move(*, url: str, say: Callable[[str], None]) -> MoveResult:
    """Copy this panel's SQLite database into the new PostgreSQL database `url`, check it, and
    audit the move there. The SQLite file is left as it was whatever happens; after a failure
    the target is left as it was: empty (its one transaction rolled back)."""
    target = _check_source_and_target(url)
    _register_target(target)
    _refuse_a_used_target()
    try:
        # One transaction on the target, from its first table to the move's own audit event
        # (PostgreSQL's DDL is transactional): a move that fails, or is killed, at any step
        # leaves it as empty as it was, never a copy that looks complete without its check.
        with transaction.atomic(using=TARGET):
            say(f"Creating the panel's tables in {redacted(url)}")
            call_command("migrate", database=TARGET, interactive=False, verbosity=0)
            say("Copying the rows")
            with transaction.atomic(using=DEFAULT_DB_ALIAS):
                copied = _copy_all(say)
                _compare_counts(copied)
            say("Verifying the audit chain on PostgreSQL")
            events = _verify_and_record(url, copied)
    except Exception as exc:
        raise MoveError(
            f"The move failed: {exc}\nThe SQLite database is untouched and still in use; nothing was kept in the "
            "target (its one transaction was rolled back), so the move may be tried again into it."
        ) from exc
    finally:
        connections[TARGET].close()
    return MoveResult(rows=copied, events=events, database_url=url)
