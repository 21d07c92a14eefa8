"""Rate limits per token: 429 with Retry-After past API_RATE_LIMIT, for that token only; counted
in the shared cache (the panel's Redis: every web worker counts the same calls); calls go
through while that cache does not answer, with a log line."""

import logging
import threading

import pytest
from django.core.cache import caches

from .helpers import auth, member, token_for

pytestmark = pytest.mark.django_db


def _calls(client, token: str, n: int) -> list[int]:
    return [client.get("/api/v1/teams/", **auth(token)).status_code for _ in range(n)]


def test_a_token_past_its_rate_gets_429_and_another_token_still_passes(client, django_user_model, team, settings):
    settings.API_RATE_LIMIT = "3/hour"
    user = member(django_user_model, "busy", team, "viewer")
    busy, other = token_for(user, "read"), token_for(user, "read")
    assert _calls(client, busy, 3) == [200, 200, 200]
    refused = client.get("/api/v1/teams/", **auth(busy))
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert "throttled" in refused.json()["detail"]
    # The same user's other token has its own count, as has the next window.
    assert _calls(client, other, 3) == [200, 200, 200]
    assert client.post("/api/v1/hosts/", {}, content_type="application/json", **auth(busy)).status_code in (403, 429)
    assert client.get("/api/v1/teams/", **auth(busy)).status_code == 429


def test_off_means_no_limit(client, django_user_model, team, settings):
    settings.API_RATE_LIMIT = "off"
    token = token_for(member(django_user_model, "free", team, "viewer"), "read")
    assert set(_calls(client, token, 5)) == {200}


@pytest.mark.parametrize("raw", ["600 per minute", "0/min", "10/fortnight", "/min", "-5/s"])
def test_a_mistyped_rate_stops_start_up_with_its_name(monkeypatch, raw):
    from django.core.exceptions import ImproperlyConfigured

    from controlpanel.settings.env import env_rate

    monkeypatch.setenv("API_RATE_LIMIT", raw)
    with pytest.raises(ImproperlyConfigured, match="API_RATE_LIMIT="):
        env_rate("API_RATE_LIMIT", "600/min")
    monkeypatch.setenv("API_RATE_LIMIT", " 20 / hour ")
    assert env_rate("API_RATE_LIMIT", "600/min") == "20 / hour"


def test_the_schema_documents_429_on_every_operation(client, django_user_model, team):
    token = token_for(member(django_user_model, "reader", team, "viewer"), "read")
    schema = client.get("/api/schema/?format=json", **auth(token)).json()
    operations = [op for item in schema["paths"].values() for op in item.values() if isinstance(op, dict) and "responses" in op]
    assert len(operations) >= 30
    for op in operations:
        assert "Retry-After" in op["responses"]["429"]["headers"], op["operationId"]
    assert "API_RATE_LIMIT" in schema["info"]["description"]


def test_calls_go_through_with_a_log_line_while_the_counter_does_not_answer(client, django_user_model, team, settings, caplog, tmp_path):
    from api import throttling

    settings.API_RATE_LIMIT = "1/hour"
    settings.CACHES = {
        **settings.CACHES,
        "api_throttle": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"unix://{tmp_path}/none.sock"},
    }
    throttling._warned_at = -throttling.WARN_EVERY
    token = token_for(member(django_user_model, "open", team, "viewer"), "read")
    with caplog.at_level(logging.WARNING, logger="api.throttling"):
        assert _calls(client, token, 3) == [200, 200, 200]
    warnings = [r for r in caplog.records if r.name == "api.throttling"]
    assert len(warnings) == 1 and "not counted" in warnings[0].getMessage()  # once a minute, not once a call


@pytest.mark.docker  # the tests' Redis, which `make test` (scripts/panel.sh test) starts
def test_web_workers_share_the_count_in_redis(client, django_user_model, team, settings):
    """Two workers are two Redis connections: calls counted on one (the test client's) and on
    another (a thread's, as another worker's) add up to the same limit."""
    settings.API_RATE_LIMIT = "4/hour"
    settings.CACHES = {
        **settings.CACHES,
        "api_throttle": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "KEY_PREFIX": "apic-test",
        },
    }
    caches["api_throttle"].clear()
    token = token_for(member(django_user_model, "shared", team, "viewer"), "read")
    assert _calls(client, token, 2) == [200, 200]
    from api.models import ApiToken
    from api.throttling import TokenRateThrottle

    prefix = token[:12]
    api_token = ApiToken.objects.get(prefix=prefix)  # read here: the thread's database connection is not the test's
    seen: list[bool] = []

    def other_worker() -> None:  # its own cache connection, as in another process
        class Call:
            auth = api_token

        seen.extend(TokenRateThrottle().allow_request(Call(), None) for _ in range(2))

    thread = threading.Thread(target=other_worker)
    thread.start()
    thread.join()
    assert seen == [True, True]
    assert client.get("/api/v1/teams/", **auth(token)).status_code == 429
    keys = [k for k in caches["api_throttle"]._cache.get_client().keys("*") if prefix.encode() in k]
    assert len(keys) == 1 and int(caches["api_throttle"]._cache.get_client().get(keys[0])) == 5
    caches["api_throttle"].clear()
