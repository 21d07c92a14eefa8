"""The dashboard shows a sandbox's disk use live: the stats socket's figures for a sandbox in the
pool carry what its quota group references and its limit, read from the real pool while the
sandbox writes; a sandbox with plain folders carries none."""

import json
import time

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from controlpanel.asgi import application
from sandboxes.live import stats
from storage import pool
from tests.storage.test_pool import sh
from tests.support.web import ws_headers

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
MB = 1024 * 1024


@pytest.fixture
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def figures_after(cookie: str, pk: int, *, until, timeout: float = 15.0) -> dict:
    """Read /ws/stats/ until the figures of sandbox `pk` satisfy `until`; returns them."""

    async def scenario():
        communicator = WebsocketCommunicator(application, "/ws/stats/", headers=ws_headers(cookie))
        assert (await communicator.connect())[0]
        try:
            deadline = time.monotonic() + timeout
            last = None
            while time.monotonic() < deadline:
                message = json.loads(await communicator.receive_from(timeout=5))
                if message.get("t") == "stats" and str(pk) in message["s"]:
                    last = message["s"][str(pk)]
                    if until(last):
                        return last
            raise AssertionError(f"the figures never matched: {last}")
        finally:
            await communicator.disconnect()

    return async_to_sync(scenario)()


def test_the_dashboards_stats_socket_carries_disk_use_from_the_pool(
    make_sandbox, clean_docker, client, admin_user, in_memory_layer, settings
):
    sandbox = make_sandbox("livedisk", disk_mb=300)
    plain_settings_pool = settings.STORAGE_POOL
    settings.STORAGE_POOL = "none"
    plain = make_sandbox("liveplain")
    settings.STORAGE_POOL = plain_settings_pool
    assert sandbox.in_pool and not plain.in_pool
    client.force_login(admin_user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    stats._collectors.clear()  # a collector of this process from an earlier test holds an old host
    try:
        first = figures_after(cookie, sandbox.pk, until=lambda f: "disk" in f)
        assert first["disk_limit"] == 300 * MB and first["disk"] < 20 * MB, first

        assert sh(sandbox, "dd if=/dev/urandom of=/workspace/Projects/grow bs=1M count=40 2>&1 && sync").returncode == 0
        now = pool.usage(sandbox.disk_group).used
        assert now >= 40 * MB
        grown = figures_after(cookie, sandbox.pk, until=lambda f: f["disk"] >= 40 * MB)
        assert grown["disk_limit"] == 300 * MB and abs(grown["disk"] - now) < 4 * MB, (grown, now)
        # The plain-folder sandbox has figures, but no disk use to show.
        theirs = figures_after(cookie, plain.pk, until=lambda f: "mem" in f)
        assert "disk" not in theirs and "disk_limit" not in theirs, theirs
    finally:
        for collector in stats._collectors.values():
            collector.pool.shutdown(wait=False)
        stats._collectors.clear()
