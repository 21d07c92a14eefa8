"""Rate limits per token: API_RATE_LIMIT calls ("600/min") per token in each window of the
period, counted in the panel's Redis (the `api_throttle` cache) so that every web worker counts
the same calls; past it, 429 with Retry-After (the seconds until the window ends).

Keyed by the token (its prefix), not by the address: a CI fleet behind one NAT does not share
one budget, and one script cannot borrow another token's. A fixed window, counted with Redis's
atomic INCR (DRF's own SimpleRateThrottle reads, appends and writes back a list of times: two
workers at once would each write their own, and count one call where there were two). At a
window's edge a token may make up to twice the rate within one period; the limit is a brake on
runaway scripts, not a security boundary (the token and its scope are).

Redis down: calls go through (fail open), with a warning at most once a minute. The limit is
not what keeps anyone out, while Redis going away would otherwise stop every script's reads too."""

import logging
import time

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import RedisError
from rest_framework.throttling import BaseThrottle

from controlpanel.settings import env

from .models import ApiToken

log = logging.getLogger(__name__)
CACHE = "api_throttle"
WARN_EVERY = 60.0
_warned_at = -WARN_EVERY


def parse_rate(rate: str) -> tuple[int, int] | None:
    """(calls, seconds) of API_RATE_LIMIT; None for "off". Checked at start-up (the settings
    read it with env_rate); a test's own value is read here with the same rule."""
    try:
        return env.parse_rate(rate)
    except ValueError:
        raise ImproperlyConfigured(f"API_RATE_LIMIT={rate!r}: write it as <calls>/<s|min|hour|day> (e.g. 600/min), or off.") from None


def _redis_down(exc: Exception) -> None:
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= WARN_EVERY:
        _warned_at = now
        log.warning("API rate limits are not counted (calls go through): the rate-limit cache does not answer: %s", exc)


class TokenRateThrottle(BaseThrottle):
    """DRF's throttle hook: True lets the call through; `wait` says for how long not."""

    def allow_request(self, request, view) -> bool:
        token = request.auth
        limit = parse_rate(settings.API_RATE_LIMIT)
        if not isinstance(token, ApiToken) or limit is None:
            return True
        calls, seconds = limit
        now = time.time()
        window = int(now // seconds)
        key = f"rate:{token.prefix}:{seconds}:{window}"
        cache = caches[CACHE]
        try:
            cache.add(key, 0, timeout=seconds + 5)
            try:
                count = cache.incr(key)
            except ValueError:  # the window's key expired between the two calls: a fresh count
                cache.set(key, 1, timeout=seconds + 5)
                count = 1
        except (RedisError, OSError) as exc:
            _redis_down(exc)
            return True
        if count <= calls:
            return True
        self._wait = (window + 1) * seconds - now
        return False

    def wait(self) -> float:
        return self._wait


def document_rate_limit(result: dict, generator, request, public) -> dict:
    """drf-spectacular's post-processing: every operation that takes a token may answer 429,
    with Retry-After; the API's description says what the limit is."""
    rate = settings.API_RATE_LIMIT
    result["info"]["description"] = (
        result["info"].get("description", "")
        + f"\n\nRate limit: {rate} calls per token (API_RATE_LIMIT), counted by every web worker together; "
        "past it a call is answered 429 with Retry-After (seconds)."
    )
    result.setdefault("components", {}).setdefault("schemas", {})
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            answer = operation["responses"].setdefault(
                "429",
                {
                    "description": "Too many calls with this token: wait the seconds Retry-After says.",
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
                        }
                    },
                },
            )
            # An operation's own 429 (too many followed logs) says Retry-After too.
            answer.setdefault("headers", {})["Retry-After"] = {"schema": {"type": "integer"}, "description": "Seconds to wait."}
    return result
