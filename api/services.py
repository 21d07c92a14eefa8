"""Personal API tokens: made, revoked and checked here, each change audited in its transaction.

A token reads `ccp_<8 hex>_<secret>`. The first part (the prefix) is stored as it is: it finds the
row, and names the token in lists and in the audit trail. The whole token is stored only as its
SHA-256 (a token is 256 random bits: a slow hash would add nothing), compared in constant time."""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from sandboxes.services.errors import InvalidInput
from teams import second_factor

from .models import ApiToken

TOKEN_RE = re.compile(r"(ccp_[0-9a-f]{8})_[A-Za-z0-9_-]{43}")


class TokenRefused(Exception):
    """A token that does not authenticate; the message says why (and is sent to the client)."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _target(token: ApiToken) -> str:
    return f"api token {token.prefix}"


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str  # the whole token, shown once and never stored


def api_token_create(*, actor, name: str, scope: str, expires_in_days, source_ip: str | None = None) -> NewToken:
    """Make a token for `actor` (a user). The caller shows `secret` once; only its hash is kept."""
    name = name.strip() if isinstance(name, str) else name
    errors: dict[str, list[str]] = {}
    if not isinstance(name, str) or not name or len(name) > 100:
        errors["name"] = ["Name: 1 to 100 characters, to tell your tokens apart."]
    if scope not in ApiToken.Scope.values:
        errors["scope"] = [f"Scope: one of {', '.join(ApiToken.Scope.values)}."]
    most = settings.API_TOKEN_MAX_DAYS
    if not isinstance(expires_in_days, int) or isinstance(expires_in_days, bool) or not 1 <= expires_in_days <= most:
        errors["expires_in_days"] = [f"Expiry: from 1 to {most} days."]
    if errors:
        raise InvalidInput(errors)
    prefix = f"ccp_{secrets.token_hex(4)}"
    while ApiToken.objects.filter(prefix=prefix).exists():  # 4 billion prefixes: a clash is rare, never fatal
        prefix = f"ccp_{secrets.token_hex(4)}"
    secret = f"{prefix}_{secrets.token_urlsafe(32)}"
    now = timezone.now()
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=actor,
            name=name,
            scope=scope,
            prefix=prefix,
            secret_hash=_digest(secret),
            created_at=now,
            expires_at=now + timedelta(days=expires_in_days),
        )
        audit_record(
            actor=actor,
            action="api_token.create",
            target=_target(token),
            details={"token": prefix, "name": name, "scope": scope, "expires_at": token.expires_at.isoformat()},
            source_ip=source_ip,
        )
    return NewToken(token, secret)


def api_token_revoke(*, actor, token_id: int, source_ip: str | None = None) -> ApiToken | None:
    """Revoke one of `actor`'s own tokens (None: no such token of theirs, or revoked already)."""
    with transaction.atomic():
        token = ApiToken.objects.filter(pk=token_id, user=actor, revoked_at__isnull=True).first()
        if token is None:
            return None
        token.revoked_at = timezone.now()
        if not ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=token.revoked_at):
            return None
        audit_record(actor=actor, action="api_token.revoke", target=_target(token), details={"token": token.prefix}, source_ip=source_ip)
    return token


def api_token_authenticate(raw: str, *, source_ip: str | None = None) -> ApiToken:
    """The active token `raw` is, with its user; TokenRefused says why not. Its first use is
    audited (once: the write is guarded), and its last use written at most once a minute."""
    match = TOKEN_RE.fullmatch(raw)
    if match is None:
        raise TokenRefused("Malformed token: expected ccp_XXXXXXXX_… as shown when it was made.")
    token = ApiToken.objects.select_related("user").filter(prefix=match.group(1)).first()
    # Compared even when no row matched, so that the answer takes as long either way.
    stored = token.secret_hash if token is not None else "0" * 64
    if not hmac.compare_digest(_digest(raw), stored) or token is None:
        raise TokenRefused("Unknown token.")
    now = timezone.now()
    if token.revoked_at is not None:
        raise TokenRefused(f"Token {token.prefix} was revoked; make a new one on the API tokens page.")
    if token.expires_at <= now:
        raise TokenRefused(f"Token {token.prefix} expired at {token.expires_at:%Y-%m-%d %H:%M} UTC; make a new one on the API tokens page.")
    if not token.user.is_active:
        raise TokenRefused(f"The user of token {token.prefix} is deactivated.")
    # A team that came to require a second factor after the token was made: as a session is sent
    # to set one up before any page answers, the token waits until there is one.
    if second_factor.setup_owed(token.user):
        raise TokenRefused("A team of yours requires a second factor: set one up on the panel (Second factor), then use the token.")
    _touch(token, now, source_ip)
    return token


def _touch(token: ApiToken, now, source_ip: str | None) -> None:
    if token.last_used_at is None:
        with transaction.atomic():
            if ApiToken.objects.filter(pk=token.pk, last_used_at__isnull=True).update(last_used_at=now):
                audit_record(
                    actor=token.user,
                    action="api_token.first_use",
                    target=_target(token),
                    details={"via": "api", "token": token.prefix},
                    source_ip=source_ip,
                )
    elif token.last_used_at < now - timedelta(seconds=settings.API_TOKEN_TOUCH_SECONDS):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    token.last_used_at = token.last_used_at or now


def tokens_of(*, user) -> list[ApiToken]:
    """The user's tokens, newest first (revoked and expired ones too, marked so)."""
    return list(ApiToken.objects.filter(user=user))
