"""Writing and checking the audit trail.

Callers write their event in the same transaction as the change it records, so a change that
rolls back leaves no event, and vice versa. Appending is serialised on every database: SQLite
takes its write lock at BEGIN (transaction_mode IMMEDIATE); PostgreSQL takes a transaction-level
advisory lock before reading the head, so the next writer reads the head only once this one has
committed. `prev_hash` is unique as well: should two writers ever read the same head, the second
insert fails instead of forking the chain.
"""

import json
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlpanel.db import serialise
from controlpanel.settings.env import key_file
from webhooks.events import webhook_event

from .models import AuditEvent, ChainCheck

log = logging.getLogger(__name__)


@cache
def _key(path: str) -> bytes:
    return key_file(Path(path).name).encode()


def audit_key() -> bytes:
    """The HMAC key, from var/audit_key (created 0600 on first use, never stored in the database)."""
    return _key(str(settings.AUDIT_KEY_FILE))


# What every event written in the current request says about how it came (an API token:
# {"via": "api", "token": prefix}); set by api.views for the request, empty elsewhere. The services
# need not know: they pass the user as the actor, as the pages do, and the event carries the token.
_attribution: ContextVar[dict[str, str] | None] = ContextVar("audit_attribution", default=None)


@contextmanager
def attributed(details: dict[str, str]) -> Iterator[None]:
    """Within the block, every event's details carry `details` too (they win over a service's own)."""
    reset = _attribution.set(details)
    try:
        yield
    finally:
        _attribution.reset(reset)


def audit_record(
    *,
    actor: Any,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
    source_ip: str | None = None,
    actor_name: str | None = None,
    sandbox_uuid: uuid.UUID | str | None = None,
    team_id: int | None = None,
) -> AuditEvent:
    """Append one event, chained to the newest one. `actor` is a user, None (system), or a
    name that is not a user's (teams.permissions.SystemActor: the CLI, the reconciler)."""
    if actor_name is None:
        actor_name = "system" if actor is None else actor if isinstance(actor, str) else actor.get_username()
    # Stored as JSON and hashed as JSON: normalise once so both see the same values.
    if (attribution := _attribution.get()) is not None:
        details = {**(details or {}), **attribution}
    details = json.loads(json.dumps(details or {}, default=str))
    key = audit_key()
    with transaction.atomic():
        serialise("audit-chain")
        head = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
        event = AuditEvent(
            seq=(head["seq"] + 1) if head else 1,
            actor=actor if getattr(actor, "pk", None) else None,
            actor_name=actor_name[:150],
            action=action,
            target=target[:255],
            sandbox_uuid=sandbox_uuid or None,
            team_id=team_id,
            details=details,
            source_ip=source_ip or None,
            created_at=timezone.now(),
            prev_hash=head["hash"] if head else "",
        )
        event.hash = event.compute_hash(key)
        event.save()
        seq, hash_ = event.seq, event.hash
        transaction.on_commit(lambda: _write_anchor(seq, hash_))
        if webhook_event(action, details) is not None:
            # The one place webhooks hear of events: once committed, their deliveries are made
            # and queued. Robust: a webhook's trouble never reaches the caller of the audit.
            event_id = event.pk
            transaction.on_commit(lambda: _to_webhooks(event_id), robust=True)
    return event


def _to_webhooks(event_id: int) -> None:
    from webhooks.services import deliveries_for_event

    deliveries_for_event(event_id=event_id)


@dataclass(frozen=True)
class ChainProblem:
    seq: int | None
    event_id: int | None
    what: str

    def __str__(self) -> str:
        return self.what


def _read_anchor() -> dict | None:
    path = settings.AUDIT_ANCHOR_FILE
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _write_anchor(seq: int, hash_: str) -> None:
    """Remember, outside the database, the newest committed head: deleting events from the end
    of the chain leaves no gap, but it does lose this head. Written after every append (and by
    every verification); an anchor that falls behind only weakens the check, never breaks it."""
    path = settings.AUDIT_ANCHOR_FILE
    if not path:
        return
    try:
        current = _read_anchor()
        if current and int(current.get("seq") or 0) > seq:
            return  # another process already recorded a newer head
        tmp = Path(f"{path}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"seq": seq, "hash": hash_, "at": timezone.now().isoformat()}))
        tmp.chmod(0o600)
        tmp.replace(path)
    except OSError:
        log.warning("could not write the audit anchor %s", path, exc_info=True)


def audit_verify_chain() -> tuple[int, ChainProblem | None]:
    """Walk the chain in insertion order; return (events checked, the first problem or None).

    Names the first event that was altered (its HMAC does not hold), missing (a gap in `seq`),
    or reordered (present, but not where its `seq` and `prev_hash` say it belongs); and a chain
    cut short since the last verification (its head then is gone)."""
    key = audit_key()
    prev_hash, expected, count = "", 1, 0
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        count += 1
        if event.compute_hash(key) != event.hash:
            return count, ChainProblem(
                event.seq,
                event.pk,
                f"Event #{event.seq} (id {event.pk}, {event.action} on {event.target}) was altered: its HMAC does not match its contents.",
            )
        if event.seq != expected:
            if event.seq > expected and not AuditEvent.objects.filter(seq=expected).exists():
                return count, ChainProblem(
                    expected, None, f"Event #{expected} is missing (the chain jumps from #{expected - 1} to #{event.seq})."
                )
            return count, ChainProblem(
                event.seq, event.pk, f"Event #{event.seq} (id {event.pk}) is out of order: it stands where #{expected} belongs."
            )
        if event.prev_hash != prev_hash:
            return count, ChainProblem(
                event.seq,
                event.pk,
                f"Event #{event.seq} (id {event.pk}) does not follow #{expected - 1}: its link to the previous event is broken.",
            )
        prev_hash, expected = event.hash, expected + 1
    anchor = _read_anchor()
    anchored = int(anchor.get("seq") or 0) if anchor else 0
    if anchor and (anchored >= expected or not AuditEvent.objects.filter(seq=anchored, hash=anchor.get("hash")).exists()):
        return count, ChainProblem(
            anchored,
            None,
            f"Event #{anchored} was recorded on "
            f"{anchor.get('at', '?')[:19]}, but the chain now ends at #{expected - 1}: "
            "events were removed from its end.",
        )
    if count:
        _write_anchor(expected - 1, prev_hash)
    return count, None


def audit_verify_and_record() -> ChainCheck:
    """Verify the chain and keep the outcome (the admins' banner reads the newest)."""
    count, problem = audit_verify_chain()
    if problem:
        log.error("audit chain broken: %s", problem)
    return ChainCheck.objects.create(ok=problem is None, events=count, problem=str(problem or ""))
