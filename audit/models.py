"""The audit trail: an append-only, hash-chained list of what was done, by whom, from where."""

import hashlib
import hmac
import json

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """One action. Actor and target are also kept as text so the event outlives deletions.

    `seq` numbers events 1, 2, 3... with no gap, and `hash` is an HMAC (keyed from a file outside
    the database, see audit.chain) over this event's fields, its `seq` and the previous event's
    hash. Editing, deleting or reordering rows breaks the chain, and `audit verify` names the
    first event where it breaks. `prev_hash` is unique: two writers can never both extend the
    same head (the chain cannot fork).

    An event about a sandbox carries the sandbox's UUID and its team, which is how the audit
    page shows each user only what concerns their teams. `actor` and `team` keep their ids even
    when the user or team is deleted (no database constraint), since the ids are part of the
    hash; `actor_name` says who it was."""

    seq = models.PositiveBigIntegerField(unique=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=64, db_index=True)
    target = models.CharField(max_length=255, db_index=True)
    sandbox_uuid = models.UUIDField(null=True, blank=True, db_index=True)
    team = models.ForeignKey("teams.Team", null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    details = models.JSONField(default=dict, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)
    prev_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-seq"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.target}"

    def payload(self) -> bytes:
        """The bytes the HMAC covers: every field that says what happened, and where in the chain."""
        return payload(
            self.seq,
            self.prev_hash,
            self.actor_id,
            self.actor_name,
            self.action,
            self.target,
            str(self.sandbox_uuid) if self.sandbox_uuid else None,
            self.team_id,
            self.details,
            self.source_ip,
            self.created_at.isoformat(),
        )

    def compute_hash(self, key: bytes) -> str:
        return hmac.new(key, self.payload(), hashlib.sha256).hexdigest()


def payload(seq, prev_hash, actor_id, actor_name, action, target, sandbox_uuid, team_id, details, source_ip, created_at_iso) -> bytes:
    """The HMAC's input for an event given as plain values (an export is checked with it)."""
    return json.dumps(
        [seq, prev_hash, actor_id, actor_name, action, target, sandbox_uuid, team_id, details, source_ip, created_at_iso],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    ).encode()


class ChainCheck(models.Model):
    """The outcome of one `audit verify` run; the newest one decides the admins' banner."""

    checked_at = models.DateTimeField(auto_now_add=True)
    ok = models.BooleanField()
    events = models.PositiveBigIntegerField(default=0)
    problem = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-checked_at", "-id"]

    def __str__(self) -> str:
        return f"{self.checked_at:%Y-%m-%d %H:%M} {'intact' if self.ok else 'broken'} ({self.events} events)"
