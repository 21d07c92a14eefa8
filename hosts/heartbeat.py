"""The events watcher's heartbeat: every HEARTBEAT_SECONDS, ask its host's engine for its
version and write what it found into the host's row (one UPDATE). The Hosts page calls a host
whose beat is older than three intervals stale: the watcher, or its machine, is away.

Runs as a thread of `manage.py watch_engine`, like the resolver and the rule watch. On a host
agent's machine (PANEL_HOST_AGENT) it also stops the agent once its host was disabled by revoking
the token it joined with (hosts.join.revoked): SIGTERM to the agent's supervisor
(`manage.py host agent` names it in PANEL_AGENT_SUPERVISOR_PID), which stops its workers and
itself; without one, to this process.
"""

import logging
import os
import signal
import threading
from collections.abc import Callable

from django.conf import settings
from django.db import close_old_connections

from sandboxes import engine
from sandboxes.network import threads

from . import health
from .selectors import HEARTBEAT_SECONDS
from .services import host_heartbeat

PING_TIMEOUT = 3  # seconds: a hung engine makes a beat that says so, never a late one
log = logging.getLogger(__name__)


def beat(host: engine.Host) -> str:
    """One beat for `host`: its engine's version, or the error; returns the error ("" if none)."""
    try:
        version, error = engine.engine_for_host(host.with_timeout(PING_TIMEOUT)).ping(), ""
    except engine.EngineError as exc:
        version, error = "", str(exc) or exc.__class__.__name__
    host_heartbeat(host_name=host.name, engine_version=version, error=error)
    return error


def stop_agent() -> None:
    """Stop this host's agent: its supervisor, which stops the workers and the watcher with it."""
    supervisor = os.environ.get("PANEL_AGENT_SUPERVISOR_PID", "")
    os.kill(int(supervisor) if supervisor.isdigit() else os.getpid(), signal.SIGTERM)


def loop(stop: threading.Event, *, every: float = HEARTBEAT_SECONDS, on_revoked: Callable[[], None] = stop_agent) -> None:
    """Until `stop` is set: beat for this machine's host (PANEL_HOST's row). An agent whose host
    was revoked calls `on_revoked` and beats no more. The panel's machine also looks at every
    host's beats for the ones that became unreachable or came back (hosts.health)."""
    from .join import revoked

    watch = None if settings.PANEL_HOST_AGENT else health.Watch()
    while not stop.is_set():
        close_old_connections()  # a database that went away and came back: a new connection
        beat(engine.default_host())
        if settings.PANEL_HOST_AGENT and revoked(settings.PANEL_HOST):
            log.error("host %s was revoked, deleted or made anew without an agent: the agent stops", settings.PANEL_HOST)
            on_revoked()
            return
        if watch is not None:
            watch.check()
        stop.wait(every)


def start_thread(*, every: float = HEARTBEAT_SECONDS) -> threading.Event:
    return threads.supervised("host-heartbeat", lambda stop: loop(stop, every=every))
