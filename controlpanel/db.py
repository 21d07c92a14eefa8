"""Serialising writers that must see each other's committed rows (the audit chain's head, the
set of mounted folders) on every database the panel runs on."""

import os
import zlib

from django.db import connection


def serialise(name: str) -> None:
    """Inside a transaction: wait until no other transaction holds the lock called `name`, and
    hold it until this one ends. On PostgreSQL a transaction-level advisory lock; on SQLite every
    write transaction already holds the one database lock from BEGIN (transaction_mode
    IMMEDIATE), so there is nothing more to take."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(name.encode())])


def restrict_sqlite_files(sender, connection, **kwargs) -> None:
    """connection_created: keep the SQLite database (and its -wal and -shm, which SQLite creates
    with the database file's mode) readable by the panel's user alone."""
    if connection.vendor != "sqlite":
        return
    name = str(connection.settings_dict.get("NAME") or "")
    if name and not name.startswith(("file:", ":memory:")):
        for suffix in ("", "-wal", "-shm"):
            try:
                os.chmod(name + suffix, 0o600)
            except FileNotFoundError:
                pass
