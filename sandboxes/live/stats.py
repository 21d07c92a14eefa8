"""Resource use of the running sandboxes, at 1 Hz, for whoever is watching.

One collector per host, in the websocket process, serves every viewer: it samples each running
sandbox of its host once a second (Docker's one-shot stats, a few milliseconds each, several at
once) and hands the figures to its subscribers, each of which passes on only what its user may
see. With no subscriber it stops: nothing is polled when nobody looks. It keeps the last five
minutes per sandbox, so that a page opened now draws its charts at once.

The sockets that show the figures are here too: StatsConsumer (one sandbox's page: its
figures, and its processes every two seconds) and DashboardStatsConsumer (the dashboard's cells).
"""

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from storage import pool

from .. import engine, live
from ..models import Sandbox
from . import access
from .streams import CLOSE_TRY_LATER, CLOSE_UNAUTHORISED, SandboxStream

log = logging.getLogger(__name__)
INTERVAL = 1.0
HISTORY = 300  # samples: five minutes at 1 Hz

Subscriber = Callable[[dict[int, dict[str, Any]]], Awaitable[None]]


def figures(sample: dict[str, Any], previous: dict[str, Any] | None, elapsed: float) -> dict[str, Any]:
    """Plain figures from one Docker stats sample (and the one before, for rates and CPU %)."""
    cpu = sample.get("cpu_stats") or {}
    memory = sample.get("memory_stats") or {}
    stats = memory.get("stats") or {}
    # What the kernel could take back at once is not "used": the page cache (cgroup v1) or the
    # inactive file pages (v2), as `docker stats` counts it.
    used = max(0, (memory.get("usage") or 0) - (stats.get("total_inactive_file") or stats.get("inactive_file") or 0))
    networks = (sample.get("networks") or {}).values()
    rx = sum(n.get("rx_bytes", 0) for n in networks)
    tx = sum(n.get("tx_bytes", 0) for n in networks)
    blk_read = blk_write = 0
    for entry in (sample.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = (entry.get("op") or "").lower()
        if op == "read":
            blk_read += entry.get("value", 0)
        elif op == "write":
            blk_write += entry.get("value", 0)
    found = {
        "cpu": None,
        "mem": used,
        "mem_limit": memory.get("limit") or 0,
        "rx": rx,
        "tx": tx,
        "blk_read": blk_read,
        "blk_write": blk_write,
        "pids": (sample.get("pids_stats") or {}).get("current") or 0,
        "rx_rate": None,
        "tx_rate": None,
        "t": time.time(),
        "_cpu_total": (cpu.get("cpu_usage") or {}).get("total_usage") or 0,
        "_cpu_system": cpu.get("system_cpu_usage") or 0,
        "_cpus": cpu.get("online_cpus") or 1,
    }
    if previous is not None:
        system_delta = found["_cpu_system"] - previous["_cpu_system"]
        if system_delta > 0:
            found["cpu"] = round(100.0 * (found["_cpu_total"] - previous["_cpu_total"]) / system_delta * found["_cpus"], 2)
        if elapsed > 0:
            found["rx_rate"] = max(0.0, (rx - previous["rx"]) / elapsed)
            found["tx_rate"] = max(0.0, (tx - previous["tx"]) / elapsed)
    return found


def public(f: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in f.items() if not k.startswith("_")}


class StatsCollector:
    def __init__(self, host: engine.Host):
        self.host = host
        self.subscribers: dict[object, Subscriber] = {}
        self.task: asyncio.Task | None = None
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"stats-{host.name}")
        self.previous: dict[str, dict[str, Any]] = {}  # container id -> last figures
        self.history: dict[int, deque] = {}
        self.samples_taken = 0
        self.tops: dict[str, tuple[float, asyncio.Future]] = {}  # container id -> (when, its process list)

    def subscribe(self, key: object, callback: Subscriber) -> None:
        self.subscribers[key] = callback
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def unsubscribe(self, key: object) -> None:
        self.subscribers.pop(key, None)
        if not self.subscribers and self.task is not None:
            self.task.cancel()
            self.task = None

    async def processes(self, container_id: str) -> list[dict[str, str]] | None:
        """The container's processes (`docker top`), asked of Docker at most once in 1.5 s for
        every viewer together; None if Docker did not answer within 5 s."""
        loop = asyncio.get_running_loop()
        when, found = self.tops.get(container_id, (0.0, None))
        if found is None or loop.time() - when > 1.5:
            docker = engine.engine_for_host(engine.Host(self.host.name, self.host.base_url, 5))
            found = loop.run_in_executor(self.pool, docker.top, container_id)
            self.tops = {cid: v for cid, v in self.tops.items() if loop.time() - v[0] < 10}
            self.tops[container_id] = (loop.time(), found)
        try:
            return await asyncio.shield(found)
        except engine.EngineError:
            return None

    def history_of(self, sandbox_id: int) -> list[dict[str, Any]]:
        return list(self.history.get(sandbox_id, ()))

    @database_sync_to_async
    def _running(self) -> list[tuple[int, str, str]]:
        return list(
            # This collector's host's sandboxes only: another engine's containers are not found
            # here, and a host that does not answer would cost every collector a timeout each.
            Sandbox.objects.filter(status__in=[Sandbox.Status.RUNNING, Sandbox.Status.PAUSED], host__name=self.host.name)
            .exclude(container_id="")
            .values_list("pk", "container_id", "disk_group")
        )

    def _sample(self, container_id: str) -> dict[str, Any] | None:
        try:
            return engine.engine_for_host(self.host).stats_once(container_id)
        except engine.EngineError:
            return None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.subscribers:
            started = loop.time()
            try:
                await self._tick(loop)
            except asyncio.CancelledError:
                raise
            except Exception:  # the collector outlives any one bad tick
                log.warning("stats tick failed", exc_info=True)
            await asyncio.sleep(max(0.05, INTERVAL - (loop.time() - started)))

    async def _tick(self, loop) -> None:
        running = await self._running()
        samples = await asyncio.gather(*(loop.run_in_executor(self.pool, self._sample, cid) for _, cid, _ in running))
        now = time.time()
        current: dict[int, dict[str, Any]] = {}
        seen = set()
        for (pk, cid, group), sample in zip(running, samples, strict=True):
            if sample is None or not sample.get("read") or not (sample.get("cpu_stats") or {}).get("system_cpu_usage"):
                continue  # stopped meanwhile
            previous = self.previous.get(cid)
            found = figures(sample, previous, now - previous["t"] if previous else 0.0)
            self.previous[cid] = found
            seen.add(cid)
            current[pk] = public(found)
            if group and (disk := pool.usage(group)) is not None:  # a read of sysfs: no process started
                current[pk].update(disk=disk.used, disk_limit=disk.limit)
            self.history.setdefault(pk, deque(maxlen=HISTORY)).append(current[pk])
        self.previous = {cid: f for cid, f in self.previous.items() if cid in seen}
        running_ids = {pk for pk, _, _ in running}
        self.history = {pk: h for pk, h in self.history.items() if pk in running_ids}
        self.samples_taken += 1
        # Every viewer at once, each given at most a second: one slow socket holds no one else.
        callbacks = list(self.subscribers.values())
        outcomes = await asyncio.gather(*(asyncio.wait_for(cb(current), timeout=1.0) for cb in callbacks), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception) and not isinstance(outcome, asyncio.TimeoutError):
                log.warning("stats subscriber failed: %r", outcome)


_collectors: dict[engine.Host, StatsCollector] = {}


def collector_for(host: engine.Host | None = None) -> StatsCollector:
    """The one collector of `host` (the default host) in this process."""
    host = host or engine.default_host()
    if host not in _collectors:
        _collectors[host] = StatsCollector(host)
    return _collectors[host]


# --- the sockets: one sandbox's page, and the dashboard ----------------------------------------


class StatsConsumer(SandboxStream):
    """/ws/sandboxes/<pk>/stats/: this sandbox's figures at 1 Hz, the last five minutes at once,
    and its processes every two seconds. {"t": "history"|"stats", ...}, {"t": "processes", ...}."""

    async def started(self):
        self.collector = collector_for(engine.host_for(self.sandbox))
        await self.send_json({"t": "history", "s": self.collector.history_of(self.sandbox_id)})
        self.ticks = 0
        self.top_task: asyncio.Task | None = None
        self.collector.subscribe(self, self._tick)

    async def stopped(self):
        if getattr(self, "collector", None):
            self.collector.unsubscribe(self)
        top_task = getattr(self, "top_task", None)
        if top_task is not None:
            top_task.cancel()

    async def _tick(self, current: dict[int, dict]) -> None:
        if self.closed or not await self.allowed():
            return
        if self.sandbox_id in current:
            await self.send_json({"t": "stats", "s": current[self.sandbox_id]})
        self.ticks += 1
        # The process list comes on its own time: a slow `docker top` never holds the tick.
        if self.ticks % 2 == 1 and (self.top_task is None or self.top_task.done()):
            self.top_task = asyncio.get_running_loop().create_task(self._processes())

    async def _processes(self) -> None:
        sandbox = self.sandbox
        if sandbox.status != Sandbox.Status.RUNNING or not sandbox.container_id:
            await self.send_json({"t": "processes", "p": []})
            return
        processes = await self.collector.processes(sandbox.container_id)
        if processes is not None and not self.closed:
            await self.send_json({"t": "processes", "p": processes})


def _every_host() -> list[engine.Host]:
    from hosts.models import Host

    return [engine.host_of(row) for row in Host.objects.only("name", "docker_url")] or [engine.default_host()]


class DashboardStatsConsumer(AsyncWebsocketConsumer):
    """/ws/stats/: figures for every running sandbox the user may see, for the dashboard's cells.
    Who may see what is read again at every tick."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHORISED)
            return
        self.user_id, self.session_key = user.pk, self.scope["session"].session_key or ""
        self.closed = False
        try:
            await self.channel_layer.group_add(live.user_group(self.user_id), self.channel_name)
        except Exception:  # noqa: BLE001 - Redis is down: the page's socket retries
            await self.close(code=CLOSE_TRY_LATER)
            return
        await self.accept()
        # Every host's collector (each samples its own host's sandboxes; the page merges what
        # each sends). The rows are a query, so not on the loop.
        self.collectors = [collector_for(host) for host in await database_sync_to_async(_every_host)()]
        for collector in self.collectors:
            collector.subscribe(self, self._tick)

    async def disconnect(self, code):
        self.closed = True
        for collector in getattr(self, "collectors", ()):
            collector.unsubscribe(self)
        with contextlib.suppress(Exception):  # Redis away: the group expires by itself
            await self.channel_layer.group_discard(live.user_group(self.user_id), self.channel_name)

    async def session_ended(self, event):
        if event.get("session") not in (None, self.session_key) and await database_sync_to_async(access.session_still_valid)(
            user_id=self.user_id, session_key=self.session_key
        ):
            return
        self.closed = True
        await self.close(code=CLOSE_UNAUTHORISED)

    async def access_changed(self, event):
        pass  # read again at the next tick anyway

    async def sandbox_status(self, event):
        pass

    @database_sync_to_async
    def _visible(self, ids: list[int]) -> set[int] | None:
        from django.contrib.auth import get_user_model

        from teams.permissions import team_roles

        user = get_user_model().objects.filter(pk=self.user_id, is_active=True).first()
        if user is None or not access.session_is_valid(self.session_key, user):
            return None
        rows = Sandbox.objects.filter(pk__in=ids)
        if not user.is_superuser:
            rows = rows.filter(team_id__in=list(team_roles(user=user)))
        return set(rows.values_list("pk", flat=True))

    async def _tick(self, current: dict[int, dict]) -> None:
        if self.closed:
            return
        visible = await self._visible(list(current))
        if visible is None:
            self.closed = True
            await self.close(code=CLOSE_UNAUTHORISED)
            return
        payload = {pk: figures for pk, figures in current.items() if pk in visible}
        await self.send(text_data=json.dumps({"t": "stats", "s": payload}, separators=(",", ":")))
