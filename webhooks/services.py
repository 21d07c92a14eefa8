"""Webhooks: the writes (a team admin's, each audited) and the deliveries (made from audit
events, sent and retried by webhooks.tasks).

Every delivery is claimed by a guarded update (pending → sending) before its attempt, so a task
delivered twice, or queued again by the sweep, sends once. Its outcome is written by another
guarded update (the claim's attempt number), so a claim the sweep took back is never
overwritten by a worker that woke up late.
"""

import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_record
from sandboxes.secrets import vault
from sandboxes.services import InvalidInput
from teams.models import Team
from teams.permissions import Role, SystemActor, actor_name, actor_user, authorize

from . import addresses, events, http
from .models import Delivery, Webhook

log = logging.getLogger(__name__)
D = Delivery.Status
SECRET_PREFIX = "whsec_"  # noqa: S105 - a label before the random part, not a secret


@dataclass(frozen=True)
class NewSecret:
    """A webhook and its secret in plain text, for the one page that shows it."""

    webhook: Webhook
    secret: str


def _origin(url: str) -> str:
    """The URL's scheme, host and port only: its path or query may hold a receiver's token,
    which the audit trail (read by every member) must not."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
    except ValueError:
        return "(unreadable URL)"


def _audit(actor, action: str, webhook: Webhook, details: dict | None = None, source_ip: str | None = None) -> None:
    audit_record(
        actor=actor_user(actor),
        actor_name=actor_name(actor),
        action=action,
        target=f"webhook {webhook.pk} ({_origin(webhook.url)})",
        team_id=webhook.team_id,
        details=details,
        source_ip=source_ip,
    )


def _new_secret() -> tuple[str, str]:
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    return secret, vault.seal(secret)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature a receiver checks: hex HMAC-SHA256 of "timestamp.body" under the secret."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


PRIVATE_NEEDS_SUPERUSER = (
    "Only the panel's administrators (superusers) may let a webhook reach a private address: it opens "
    "the panel's own machine (its services on 127.0.0.1) and its network to whoever chose the URL."
)


def _authorize_private(actor) -> None:
    """Reaching a private address is the host's policy (the egress rules, which no team lifts for
    its sandboxes either), not a team's: a team admin could otherwise POST, with a path of their
    choosing, to the panel's machine's own services (a Docker API on TCP, the panel itself) or
    its LAN, and read the start of each answer back as the delivery's error."""
    if not (isinstance(actor, SystemActor) or getattr(actor, "is_superuser", False)):
        raise PermissionDenied(PRIVATE_NEEDS_SUPERUSER)


def judge_url(url: str, *, allow_private: bool) -> str:
    """The URL as stored, or InvalidInput on `url` saying why it may not be delivered to now."""
    try:
        addresses.target(url, allow_private=allow_private)
    except addresses.AddressRefused as exc:
        raise InvalidInput({"url": [str(exc)]}) from exc
    return url.strip()


def _judge_events(chosen: list[str]) -> list[str]:
    unknown = [e for e in chosen if e not in events.EVENT_NAMES]
    if unknown or not chosen:
        raise InvalidInput({"events": [f"Choose at least one of: {', '.join(sorted(events.EVENT_NAMES))}."]})
    return [name for name, _ in events.EVENTS if name in chosen]


def webhook_create(
    *, actor, team: Team, url: str, chosen_events: list[str], allow_private: bool = False, source_ip: str | None = None
) -> NewSecret:
    """Register a URL for the chosen events (team admins; allowing a private address, superusers
    only). The secret is returned this once."""
    authorize(actor, team, Role.ADMIN)
    if allow_private:
        _authorize_private(actor)
    chosen = _judge_events(chosen_events)
    url = judge_url(url, allow_private=allow_private)
    with transaction.atomic():
        if Webhook.objects.select_for_update().filter(team=team).count() >= settings.WEBHOOK_MAX_PER_TEAM:
            raise InvalidInput({"": [f"A team has at most {settings.WEBHOOK_MAX_PER_TEAM} webhooks; delete one first."]})
        secret, sealed = _new_secret()
        webhook = Webhook.objects.create(
            team=team,
            url=url,
            events=chosen,
            secret_sealed=sealed,
            allow_private=allow_private,
            created_by=actor_user(actor),
            created_by_name=actor_name(actor),
        )
        _audit(actor, "webhook.created", webhook, {"events": chosen, "allow_private": allow_private}, source_ip)
    return NewSecret(webhook, secret)


def webhook_rotate_secret(*, actor, webhook: Webhook, source_ip: str | None = None) -> NewSecret:
    """A new secret (returned this once); the old one signs nothing from now on."""
    authorize(actor, webhook.team, Role.ADMIN)
    secret, sealed = _new_secret()
    with transaction.atomic():
        Webhook.objects.filter(pk=webhook.pk).update(secret_sealed=sealed, secret_rotated_at=timezone.now())
        _audit(actor, "webhook.secret_rotated", webhook, {}, source_ip)
    webhook.refresh_from_db()
    return NewSecret(webhook, secret)


def webhook_set_enabled(*, actor, webhook: Webhook, enabled: bool, source_ip: str | None = None) -> None:
    """Turn deliveries on or off (a disabled webhook's waiting deliveries end refused)."""
    authorize(actor, webhook.team, Role.ADMIN)
    with transaction.atomic():
        if Webhook.objects.filter(pk=webhook.pk).exclude(enabled=enabled).update(enabled=enabled):
            _audit(actor, "webhook.enabled" if enabled else "webhook.disabled", webhook, {}, source_ip)
    webhook.enabled = enabled


def webhook_set_allow_private(*, actor, webhook: Webhook, allow: bool, source_ip: str | None = None) -> None:
    """Let the webhook reach private addresses (superusers), or not (team admins too); audited.
    Turned off, the next delivery to a private address is refused: the rule is judged at every
    delivery."""
    authorize(actor, webhook.team, Role.ADMIN)
    if allow:
        _authorize_private(actor)
    with transaction.atomic():
        if Webhook.objects.filter(pk=webhook.pk).exclude(allow_private=allow).update(allow_private=allow):
            _audit(actor, "webhook.allow_private_set", webhook, {"allow_private": allow}, source_ip)
    webhook.allow_private = allow


def webhook_delete(*, actor, webhook: Webhook, source_ip: str | None = None) -> None:
    """Remove the webhook and its deliveries."""
    authorize(actor, webhook.team, Role.ADMIN)
    with transaction.atomic():
        _audit(actor, "webhook.deleted", webhook, {"events": webhook.events}, source_ip)
        webhook.delete()


def delivery_redeliver(*, actor, delivery: Delivery, source_ip: str | None = None) -> Delivery:
    """Send a delivery's event again, as a new delivery with the same payload (and event id);
    refused while WEBHOOK_MAX_WAITING_REDELIVERIES of the webhook's deliveries wait."""
    webhook = delivery.webhook
    authorize(actor, webhook.team, Role.ADMIN)
    if not Webhook.objects.filter(pk=webhook.pk, enabled=True).exists():
        raise InvalidInput({"": ["The webhook is disabled: enable it first."]})
    with transaction.atomic():
        Webhook.objects.select_for_update().filter(pk=webhook.pk).first()  # one redelivery of a webhook at a time
        waiting = Delivery.objects.filter(webhook=webhook, status__in=[D.PENDING, D.SENDING]).count()
        if waiting >= settings.WEBHOOK_MAX_WAITING_REDELIVERIES:
            raise InvalidInput({"": [f"{waiting} deliveries of this webhook are still waiting: redeliver once they are done."]})
        again = Delivery.objects.create(
            webhook=webhook, event=delivery.event, event_id=delivery.event_id, payload=delivery.payload, next_attempt_at=timezone.now()
        )
        _prune(webhook)
        _audit(
            actor, "webhook.redelivered", webhook, {"delivery": delivery.pk, "new_delivery": again.pk, "event": delivery.event}, source_ip
        )
        transaction.on_commit(partial(_queue, again.pk, 0.0))
    return again


# --- deliveries ---------------------------------------------------------------------------------


def _queue(delivery_id: int, countdown: float) -> None:
    """Send the delivery's task; a queue that is down leaves the row pending for the sweep."""
    from .tasks import delivery_task

    try:
        delivery_task.apply_async((delivery_id,), countdown=countdown)
    except Exception as exc:  # noqa: BLE001 - kombu raises several types for "broker down"
        log.warning("could not queue webhook delivery %s (the sweep will): %s", delivery_id, exc)


def _payload(name: str, event: AuditEvent, webhook: Webhook, event_id: uuid.UUID) -> dict[str, Any]:
    details = event.details or {}
    return {
        "id": str(event_id),
        "event": name,
        "occurred_at": event.created_at.isoformat(),
        "team": {"id": webhook.team_id, "slug": webhook.team.slug, "name": webhook.team.name},
        "sandbox": {"uuid": str(event.sandbox_uuid), "name": event.target} if event.sandbox_uuid else None,
        "actor": event.actor_name,
        "details": {key: details[key] for key in events.PAYLOAD_DETAILS[name] if key in details},
    }


def _coalesced(webhook: Webhook, name: str, event: AuditEvent, now: datetime) -> bool:
    seconds = events.COALESCE_SECONDS.get(name)
    if not seconds or not event.sandbox_uuid:
        return False
    recent = Delivery.objects.filter(webhook=webhook, event=name, created_at__gte=now - timedelta(seconds=seconds))
    return recent.filter(payload__sandbox__uuid=str(event.sandbox_uuid)).exists()


def _prune(webhook: Webhook) -> None:
    """Keep the newest WEBHOOK_KEEP_DELIVERIES of the webhook's deliveries (a pending one beyond
    them goes too: its task finds no row and ends)."""
    keep = settings.WEBHOOK_KEEP_DELIVERIES
    oldest_kept = Delivery.objects.filter(webhook=webhook).order_by("-id").values_list("id", flat=True)[keep - 1 : keep].first()
    if oldest_kept is not None:
        Delivery.objects.filter(webhook=webhook, id__lt=oldest_kept).delete()


def deliveries_for_event(*, event_id: int) -> list[int]:
    """The deliveries an audit event makes (called once it is committed, by audit.services),
    their tasks queued on commit; their ids. An event about a team goes to that team's enabled
    webhooks that chose it; a host-wide one (events.HOST_WIDE) to every team's."""
    event = AuditEvent.objects.filter(pk=event_id).first()
    name = events.webhook_event(event.action, event.details) if event else None
    if event is None or name is None:
        return []
    hooks = Webhook.objects.filter(enabled=True).select_related("team")
    if name not in events.HOST_WIDE:
        if event.team_id is None:
            return []
        hooks = hooks.filter(team_id=event.team_id)
    made = []
    now = timezone.now()
    with transaction.atomic():
        for hook in hooks:
            if name not in hook.events or _coalesced(hook, name, event, now):
                continue
            event_id_ = uuid.uuid4()
            delivery = Delivery.objects.create(
                webhook=hook, event=name, event_id=event_id_, payload=_payload(name, event, hook, event_id_), next_attempt_at=now
            )
            _prune(hook)
            made.append(delivery.pk)
            transaction.on_commit(partial(_queue, delivery.pk, 0.0))
    return made


def body_of(delivery: Delivery) -> bytes:
    """The bytes sent (and signed): the payload as compact JSON with sorted keys."""
    return json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()


def _backoff(attempts: int, retry_after: float | None) -> float:
    wait = settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1)
    if retry_after is not None:
        wait = max(wait, retry_after)
    return min(wait, settings.WEBHOOK_RETRY_MAX_SECONDS)


def _end(delivery: Delivery, status: str, *, code: int | None = None, error: str = "", retry_after: float | None = None) -> Delivery:
    """Write the attempt's outcome under the claim; a retryable failure with attempts left goes
    back to pending, its task queued with the backoff."""
    now = timezone.now()
    fields: dict[str, Any] = {"last_status_code": code, "last_error": error[:300], "claimed_at": None}
    countdown = None
    if status == D.PENDING:
        if delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            status = D.FAILED
            fields["last_error"] = f"{error} (gave up after {delivery.attempts} attempts)"[:300]
        else:
            countdown = _backoff(delivery.attempts, retry_after)
            fields["next_attempt_at"] = now + timedelta(seconds=countdown)
    if status == D.DELIVERED:
        fields["delivered_at"] = now
    with transaction.atomic():
        written = Delivery.objects.filter(pk=delivery.pk, status=D.SENDING, attempts=delivery.attempts).update(status=status, **fields)
        if written and countdown is not None:
            transaction.on_commit(partial(_queue, delivery.pk, countdown))
    delivery.refresh_from_db()
    return delivery


def delivery_attempt(*, delivery_id: int) -> Delivery | None:
    """One attempt at a delivery that is due; None when it is not this call's to make (gone,
    done, claimed by another worker, or not due yet)."""
    now = timezone.now()
    claimed = Delivery.objects.filter(pk=delivery_id, status=D.PENDING, next_attempt_at__lte=now + timedelta(seconds=1)).update(
        status=D.SENDING, attempts=F("attempts") + 1, claimed_at=now
    )
    if not claimed:
        return None
    delivery = Delivery.objects.select_related("webhook").get(pk=delivery_id)
    webhook = delivery.webhook
    if not webhook.enabled:
        return _end(delivery, D.REFUSED, error="The webhook is disabled.")
    try:
        target = addresses.target(webhook.url, allow_private=webhook.allow_private)
        secret = vault.unseal(webhook.secret_sealed)
    except addresses.AddressRefused as exc:
        return _end(delivery, D.REFUSED, error=str(exc))
    except vault.VaultError as exc:
        return _end(delivery, D.FAILED, error=str(exc))
    body, timestamp = body_of(delivery), str(int(time.time()))
    headers = {
        "X-Ccpanel-Event": delivery.event,
        "X-Ccpanel-Delivery": str(delivery.pk),
        "X-Ccpanel-Timestamp": timestamp,
        "X-Ccpanel-Signature": f"sha256={sign(secret, timestamp, body)}",
    }
    answer = http.post(target, body, headers)
    if answer.status is not None and 200 <= answer.status < 300:
        return _end(delivery, D.DELIVERED, code=answer.status)
    if answer.status is None:
        return _end(delivery, D.PENDING, error=answer.error)
    said = f"The receiver answered {answer.status}" + (f": {answer.error}" if answer.error else ".")
    if answer.status == 429 or answer.status >= 500:
        return _end(delivery, D.PENDING, code=answer.status, error=said, retry_after=answer.retry_after)
    return _end(delivery, D.FAILED, code=answer.status, error=said)  # 3xx and 4xx: not retried


def deliveries_sweep() -> int:
    """Periodic: attempts whose worker died (claimed long ago) end as such, with another try if
    attempts are left; due deliveries whose task was lost (the queue was down) are queued again.
    How many were queued."""
    now = timezone.now()
    stale = now - timedelta(seconds=2 * settings.WEBHOOK_TOTAL_SECONDS + 60)
    for delivery in Delivery.objects.filter(status=D.SENDING, claimed_at__lt=stale):
        _end(delivery, D.PENDING, error="The worker stopped during the attempt.")
    lost = list(
        Delivery.objects.filter(status=D.PENDING, next_attempt_at__lt=now - timedelta(seconds=60))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:500]
    )
    for pk in lost:
        _queue(pk, 0.0)
    return len(lost)
