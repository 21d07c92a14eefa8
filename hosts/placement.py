"""Where a new sandbox goes: the enabled, non-draining host with the most free reserved memory
that has every label asked for, or the host the caller names (refused, saying why, when it
cannot take it). With one host that is always "local".

"Reserved" is the sum over a host's sandboxes that are not destroyed, running or not: a stopped
sandbox may start at any time. Memory decides where a sandbox goes, never whether it may be
made: Docker's limits are caps, not reservations, and a host's sandboxes may together be given
more than it has (as on any Docker host); a team's resource policy is where admins bound them.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum

from .models import Host
from .services import local_host

DESTROYED = "destroyed"  # Sandbox.Status.DESTROYED (sandboxes depends on hosts, not the reverse)


class Unplaceable(Exception):
    """No host can take the sandbox, or the named one cannot; the message says why."""


@dataclass(frozen=True)
class Load:
    """What a host's sandboxes (not destroyed) reserve of it."""

    sandboxes: int
    memory_mb: int
    cpus: Decimal
    disk_mb: int


def with_load(hosts: QuerySet[Host] | None = None) -> QuerySet[Host]:
    """Hosts annotated with what their live sandboxes reserve (one query for all of them)."""
    live = ~Q(sandboxes__status=DESTROYED)
    return (hosts if hosts is not None else Host.objects.all()).annotate(
        live_sandboxes=Count("sandboxes", filter=live),
        reserved_memory_mb=Sum("sandboxes__memory_mb", filter=live, default=0),
        reserved_cpus=Sum("sandboxes__cpus", filter=live, default=Decimal(0)),
        reserved_disk_mb=Sum("sandboxes__disk_mb", filter=live, default=0),
    )


def load_of(host: Host) -> Load:
    """The load of a host annotated by `with_load`."""
    return Load(host.live_sandboxes, host.reserved_memory_mb, Decimal(host.reserved_cpus or 0), host.reserved_disk_mb)  # type: ignore[attr-defined]


def free_memory_mb(host: Host) -> int:
    return host.memory_mb - host.reserved_memory_mb  # type: ignore[attr-defined]


def remote_reason(host: Host) -> str | None:
    """Why `host` can hold no sandbox, or None: an engine reached over TCP or SSH mounts its
    own machine's folders, and the panel judges a sandbox's folders on this machine's disk
    (the policy's checks would hold for the wrong files). Such a host waits for its agent."""
    from sandboxes import engine

    if host.agent:
        if host.panel_url and host.last_heartbeat is None:
            return (
                f"Host {host.name}'s agent has not started yet (no heartbeat): nothing reads its queue. Start it on that "
                "machine with `make agent`."
            )
        if host.panel_url:
            return None  # its agent judges and mounts its folders; the pages reach its engine over TLS
        return (
            f"Host {host.name} is served by its agent, but the panel has no way to its engine for logs, stats and "
            "terminals: join it with --panel-url tcp://ADDRESS:2376 (Docker's TLS endpoint; README, Hosts)."
        )
    if engine.host_of(host).on_this_machine:
        return None
    return (
        f"Host {host.name}'s engine is on another machine (reached over TCP or SSH): it would mount that machine's "
        "folders, which this panel cannot judge, so it takes no sandbox until it runs the host agent."
    )


def place(*, memory_mb: int, labels: Sequence[str] = (), host_name: str | None = None) -> Host:
    """The host a new sandbox goes to. Unplaceable says why there is none. `memory_mb` is the
    new sandbox's, kept for the callers' sake: the choice is by memory left, which it does not change."""
    from .health import unreachable_reason  # health reads selectors, which read this module

    local_host()  # a panel never has no host: "local" is made again if the table is empty
    wanted = set(labels)
    if host_name:
        found = with_load(Host.objects.filter(name=host_name)).first()
        if found is None:
            raise Unplaceable(f"There is no host named {host_name!r}.")
        if not found.enabled:
            raise Unplaceable(f"Host {found.name} is disabled: it takes no new sandbox.")
        if found.draining:
            raise Unplaceable(f"Host {found.name} is draining: it takes no new sandbox.")
        if why := remote_reason(found):
            raise Unplaceable(why)
        if why := unreachable_reason(found):  # its queue is read by no one: the start would wait for good
            raise Unplaceable(f"{why} It takes no new sandbox until it answers.")
        if missing := sorted(wanted - set(found.labels or ())):
            raise Unplaceable(f"Host {found.name} lacks the label(s) {', '.join(missing)}.")
        return found
    candidates = [
        h
        for h in with_load(Host.objects.filter(enabled=True, draining=False))
        if wanted <= set(h.labels or ()) and not remote_reason(h) and not unreachable_reason(h)
    ]
    if not candidates:
        asked = f" with the label(s) {', '.join(sorted(wanted))}" if wanted else ""
        raise Unplaceable(f"No enabled host that is not draining{asked} (whose engine is on this machine and answers).")
    return max(candidates, key=lambda h: (free_memory_mb(h), h.name == "local", -h.pk))
