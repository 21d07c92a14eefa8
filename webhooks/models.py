"""Webhooks: URLs a team's admins register to be told of chosen events, and their deliveries."""

import uuid

from django.conf import settings
from django.db import models

from teams.models import Team


class Webhook(models.Model):
    """A URL that receives the chosen events as signed JSON POSTs.

    The secret signs each delivery (HMAC-SHA256); it is shown to the admin once, when made or
    rotated, and kept sealed by the secrets vault (sandboxes.secrets.vault: Fernet under a key
    outside the database), never as plain text. `allow_private` lets it reach an address the
    egress rules call private (loopback, private ranges, the host's LAN and own addresses);
    only a team admin sets it, audited. The rule itself lives in webhooks.addresses and is
    judged again at every delivery."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhooks")
    url = models.CharField(max_length=500)
    events = models.JSONField(default=list)  # names from webhooks.events.EVENTS
    secret_sealed = models.TextField()
    enabled = models.BooleanField(default=True)
    allow_private = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    secret_rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["team", "id"]

    def __str__(self) -> str:
        return f"webhook {self.pk} of {self.team}: {self.url}"


class Delivery(models.Model):
    """One event sent (or to be sent) to one webhook. A worker claims it (pending → sending) by a
    guarded update before each attempt, so a task delivered twice sends once. Only the newest
    WEBHOOK_KEEP_DELIVERIES per webhook are kept."""

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for its (next) attempt, at next_attempt_at
        SENDING = "sending"  # claimed by a worker: an attempt is under way
        DELIVERED = "delivered"  # the receiver answered 2xx
        FAILED = "failed"  # its attempts are spent, or the receiver refused it (4xx)
        REFUSED = "refused"  # the panel would not send it (a private address, a disabled webhook)

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40)
    # The event's own id (in the payload): the same for a redelivery, so receivers can tell.
    event_id = models.UUIDField(default=uuid.uuid4)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    next_attempt_at = models.DateTimeField(db_index=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.event}) to webhook {self.webhook_id}: {self.status}"


class QuotaWatch(models.Model):
    """Whether a sandbox's disk use is above the warning share of its quota, as last read: the
    periodic check (webhooks.quota) audits `sandbox.quota_high` when this turns on, once per
    crossing, and turns it off again once use falls back below."""

    sandbox = models.OneToOneField("sandboxes.Sandbox", on_delete=models.CASCADE, related_name="+")
    high = models.BooleanField(default=False)
    changed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"sandbox {self.sandbox_id}: {'above' if self.high else 'below'} the warning share"
