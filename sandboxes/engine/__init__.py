"""The only code that talks to Docker, bound to a host.

    engine_for(sandbox).start(container_id)

`EngineClient(host)` keeps its own docker-py client and raises the project's own errors
(EngineError and its kinds); plain values go in and out. There is no module-level client:
every caller asks for the engine of the host it works on: `host_for(sandbox)` reads the
sandbox's Host row (hosts.models.Host), `default_host()` the "local" row (this machine's engine:
the image builds, the health check, the events watcher). A row's blank Docker URL means what
the settings say (DOCKER_HOST, else this machine's socket). Nothing else names an engine.

What callers get is an `Engine` (protocol.py): the methods they may use, plain values in and
out. Tests of services, forms and views may put a fake in place with `override(fake)` (the fake
satisfies `Engine` too, checked by mypy); integration tests always drive the real engine.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings

from .client import (
    EVIDENCE_REPOSITORY,
    LABEL_DNS,
    LABEL_EVIDENCE,
    LABEL_HELPER,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_SANDBOX,
    LABEL_UUID,
    LABEL_WARM,
    Conflict,
    ContainerState,
    EngineError,
    EngineUnavailable,
    Host,
    NotFound,
    carries,
    managed_labels,
    ownership_labels,
)
from .containers import ContainersMixin
from .events import EventsMixin
from .images import ImagesMixin
from .networks import NetworksMixin
from .protocol import Engine
from .streams import LogLine, LogStream, StreamsMixin, Terminal, log_file_chunks
from .volumes import VolumesMixin

__all__ = [
    "EVIDENCE_REPOSITORY",
    "LABEL_EVIDENCE",
    "LABEL_DNS",
    "LABEL_HELPER",
    "LogLine",
    "LogStream",
    "Terminal",
    "LABEL_INSTANCE",
    "LABEL_MANAGED",
    "LABEL_SANDBOX",
    "LABEL_UUID",
    "LABEL_WARM",
    "Conflict",
    "ContainerState",
    "Engine",
    "EngineClient",
    "EngineError",
    "EngineUnavailable",
    "Host",
    "NotFound",
    "default_host",
    "host_for",
    "host_of",
    "engine_for",
    "engine_for_host",
    "log_file_chunks",
    "carries",
    "managed_labels",
    "ownership_labels",
    "override",
]


class EngineClient(ContainersMixin, NetworksMixin, VolumesMixin, ImagesMixin, EventsMixin, StreamsMixin):
    """Everything the panel asks of one Docker Engine (the `Engine` protocol, and the docker-py
    client behind it for this package's own use)."""


if TYPE_CHECKING:
    # mypy holds the real engine to the contract (tests/support/fakes.py does the same for the fake).
    _satisfies: type[Engine] = EngineClient

E = TypeVar("E", bound=Engine)


_engines: dict[Host, EngineClient] = {}
_engines_lock = threading.Lock()
_override: Engine | None = None


AGENT_SCHEME = "agent://"


def host_of(row: Any) -> Host:
    """The engine of a Host row (hosts.models.Host): its URL, or the settings' when blank (read
    at each call, so a changed setting takes effect). A host served by an agent is reached only
    by that agent (PANEL_HOST): elsewhere its URL is `agent://<name>`, which no client opens (it
    names another machine's socket, never this one's)."""
    if getattr(row, "agent", False) and row.name != settings.PANEL_HOST:
        # Elsewhere than on its agent: the engine's TLS endpoint the panel was given, if any.
        url = getattr(row, "panel_url", "") or f"{AGENT_SCHEME}{row.name}"
        return Host(name=row.name, base_url=url, timeout=settings.DOCKER_TIMEOUT)
    return Host(name=row.name, base_url=row.docker_url or settings.DOCKER_HOST, timeout=settings.DOCKER_TIMEOUT)


def _settings_host() -> Host:
    return Host(name=settings.PANEL_HOST, base_url=settings.DOCKER_HOST, timeout=settings.DOCKER_TIMEOUT)


def default_host() -> Host:
    """This machine's engine: its host row's (PANEL_HOST: "local" but on an agent's machine),
    or the settings' while there is no such row or no table yet (the very first `migrate`, or an
    older database). One small query; a failed one inside a transaction is rolled back to a
    savepoint, so the caller's transaction stays usable on PostgreSQL."""
    from django.db import DatabaseError, connection, transaction

    from hosts.models import Host as HostRow

    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            row = HostRow.objects.filter(name=settings.PANEL_HOST).only("name", "docker_url", "agent", "panel_url").first()
    except (DatabaseError, RuntimeError):  # RuntimeError: a test without the database (pytest-django's blocker)
        row = None
    return host_of(row) if row is not None else _settings_host()


def host_for(sandbox: Any) -> Host:
    """The engine of the host `sandbox` is on (its row's `host`; one query the first time it is
    asked of an instance, none after, or none at all when it was fetched with
    select_related("host"), as the live sockets do)."""
    return host_of(sandbox.host)


def engine_for_host(host: Host) -> Engine:
    if _override is not None:
        return _override
    with _engines_lock:
        if host not in _engines:
            _engines[host] = EngineClient(host)
        return _engines[host]


def engine_for(sandbox: Any = None, *, timeout: int | None = None) -> Engine:
    """The engine of the host `sandbox` runs on (the default host when None: image builds,
    health checks, the events watcher of this machine). Pages pass a short `timeout`, so that a
    hung engine cannot hold a request for long."""
    if _override is not None:  # the fast tests' fake is every host's engine: no row to read
        return _override
    host = host_for(sandbox) if sandbox is not None else default_host()
    if timeout is not None:
        host = host.with_timeout(timeout)
    return engine_for_host(host)


@contextmanager
def override(fake: E) -> Iterator[E]:
    """Use `fake` as every host's engine while the block runs (fast tests of services only)."""
    global _override
    previous, _override = _override, fake
    try:
        yield fake
    finally:
        _override = previous
