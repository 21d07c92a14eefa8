"""Audit events in bulk, for the tests that need a long trail (an export, a database move)."""

import hashlib
import hmac
import json
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_key


def million_events(count: int) -> None:
    """`count` chained events, inserted in bulk with plain SQL (each HMAC computed from the same
    payload as audit_record's; model instances and bulk_create would take minutes here)."""
    key = audit_key()
    start = timezone.now() - timedelta(days=1)
    table = AuditEvent._meta.db_table
    ops = connection.ops
    sql = (
        f"INSERT INTO {table} (seq, actor_name, action, target, details, created_at, prev_hash, hash) "  # noqa: S608 - the model's own table
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    )
    json_field = AuditEvent._meta.get_field("details")
    prev, batch = "", []
    with transaction.atomic(), connection.cursor() as cursor:
        for seq in range(1, count + 1):
            created = start + timedelta(microseconds=seq)
            details = {"n": seq}
            target = f"box-{seq % 50}"
            payload = json.dumps(
                [seq, prev, None, "load", "sandbox.start", target, None, None, details, None, created.isoformat()],
                sort_keys=True,
                separators=(",", ":"),
                default=str,
            ).encode()
            digest = hmac.new(key, payload, hashlib.sha256).hexdigest()
            batch.append(
                (
                    seq,
                    "load",
                    "sandbox.start",
                    target,
                    json_field.get_db_prep_save(details, connection),
                    ops.adapt_datetimefield_value(created),
                    prev,
                    digest,
                )
            )
            prev = digest
            if len(batch) == 20000:
                cursor.executemany(sql, batch)
                batch = []
        if batch:
            cursor.executemany(sql, batch)
