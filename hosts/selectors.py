"""Reads about hosts: the Hosts page's rows, and whether the panel has more than one."""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Func, Subquery
from django.utils import timezone

from .models import Host, JoinToken
from .placement import Load, load_of, with_load

HEARTBEAT_SECONDS = 5.0  # how often the events watcher beats (hosts.heartbeat)
STALE_AFTER = timedelta(seconds=3 * HEARTBEAT_SECONDS)


@dataclass(frozen=True)
class HostRow:
    host: Host
    load: Load
    base_url: str  # what the engine is reached at, in words
    stale: bool  # no heartbeat within 3 beats: the watcher (or its engine) is not answering
    pool_free_mb: int | None  # the storage pool's free space, for this machine's engine only
    warm_ready: int = 0  # its warm pool's started containers ready for a create (sandboxes.services.warm)
    warm_wanted: int = 0  # how many WARM_POOL asks of it (none while it is disabled or draining)
    deletable: bool = False  # no sandbox row names it, destroyed ones included, nor a move's (host_delete's rule)

    @property
    def reachable(self) -> bool:
        return self.host.last_heartbeat is not None and not self.stale and not self.host.last_error


def is_stale(beat: datetime | None, *, now: datetime | None = None) -> bool:
    return beat is None or (now or timezone.now()) - beat > STALE_AFTER


def several_hosts() -> bool:
    """Whether the panel has more than one host (the dashboard names each sandbox's host then)."""
    return Host.objects.count() > 1


def host_count() -> Subquery:
    """How many hosts there are, as a subquery: annotated on the dashboard's page of sandboxes,
    it says whether to name each one's host without a query of its own."""
    return Subquery(Host.objects.order_by().annotate(n=Func(F("pk"), function="COUNT")).values("n")[:1])


def enabled_host_names() -> list[str]:
    return list(Host.objects.filter(enabled=True).values_list("name", flat=True))


def _pool_free_mb() -> int | None:
    from storage import pool

    if not pool.active():
        return None
    try:
        status = pool.status()
    except (pool.PoolError, OSError):
        return None
    free = status.get("free")
    return int(free) // (1 << 20) if isinstance(free, int) else None


def host_rows() -> list[HostRow]:
    """Every host with its load, its health as the watcher last wrote it, and, for this
    machine's engine, the storage pool's free space."""
    from django.db.models import Count, Exists, OuterRef, Q

    from sandboxes import engine
    from sandboxes.models import Move, Sandbox, WarmSlot

    now = timezone.now()
    ready = dict(
        WarmSlot.objects.filter(status=WarmSlot.Status.READY)
        .order_by()
        .values("host_id")
        .annotate(n=Count("pk"))
        .values_list("host_id", "n")
    )
    wanted = sum(count for _image, _mode, count in settings.WARM_POOL)
    rows = []
    moved = Move.objects.filter(Q(source=OuterRef("pk")) | Q(target=OuterRef("pk")))
    named = Exists(Sandbox.objects.filter(host=OuterRef("pk"))) | Exists(moved)
    for host in with_load(Host.objects.annotate(named=named)):
        where = host.docker_url or settings.DOCKER_HOST or "this machine's default socket"
        if host.agent:
            seen = f"{host.docker_url or 'the default socket'} on its own machine"
            where = f"its agent ({seen}); the panel: {host.panel_url or 'no URL (no logs, stats or terminals, no sandbox)'}"
        local = not host.agent and engine.Host(host.name, host.docker_url or settings.DOCKER_HOST, 1).is_local
        row = HostRow(host, load_of(host), where, is_stale(host.last_heartbeat, now=now), _pool_free_mb() if local else None)
        wanted_here = wanted if host.accepts_sandboxes else 0
        rows.append(replace(row, warm_ready=ready.get(host.pk, 0), warm_wanted=wanted_here, deletable=not host.named))  # type: ignore[attr-defined]
    return rows


@dataclass(frozen=True)
class TokenRow:
    token: JoinToken
    state: str  # waiting, used, revoked or expired


def token_rows(limit: int = 50) -> list[TokenRow]:
    """The newest join tokens, with their state (never their secret: only its hash is kept)."""
    now = timezone.now()
    return [TokenRow(t, t.state(now)) for t in JoinToken.objects.select_related("host")[:limit]]
