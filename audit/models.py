"""The audit trail: an append-only, hash-chained list of what was done, by whom, from where."""

import hashlib
import json

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """One action. Actor and target are also kept as text so the event outlives deletions;
    `hash` covers this event's fields and the previous event's hash, so editing or removing a
    row breaks the chain (see audit.services.audit_verify_chain)."""

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=64, db_index=True)
    target = models.CharField(max_length=255, db_index=True)
    details = models.JSONField(default=dict, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.target}"

    def compute_hash(self) -> str:
        payload = json.dumps(
            [
                self.prev_hash,
                self.actor_name,
                self.action,
                self.target,
                self.details,
                self.source_ip,
                self.created_at.isoformat(),
            ],
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()
