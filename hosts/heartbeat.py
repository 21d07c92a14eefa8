"""The events watcher's heartbeat: every HEARTBEAT_SECONDS, ask its host's engine for its
version and write what it found into the host's row (one UPDATE). The Hosts page calls a host
whose beat is older than three intervals stale: the watcher, or its machine, is away.

Runs as a thread of `manage.py watch_engine`, like the resolver and the rule watch.
"""

import threading

from django.db import close_old_connections

from sandboxes import engine
from sandboxes.network import threads

from . import health
from .selectors import HEARTBEAT_SECONDS
from .services import host_heartbeat

PING_TIMEOUT = 3  # seconds: a hung engine makes a beat that says so, never a late one


def beat(host: engine.Host) -> str:
    """One beat for `host`: its engine's version, or the error; returns the error ("" if none)."""
    try:
        version, error = engine.engine_for_host(host.with_timeout(PING_TIMEOUT)).ping(), ""
    except engine.EngineError as exc:
        version, error = "", str(exc) or exc.__class__.__name__
    host_heartbeat(host_name=host.name, engine_version=version, error=error)
    return error


def loop(stop: threading.Event, *, every: float = HEARTBEAT_SECONDS) -> None:
    """Until `stop` is set: beat for this machine's host (the "local" row), and look at every
    host's beats for the ones that became unreachable or came back (hosts.health)."""
    watch = health.Watch()
    while not stop.is_set():
        close_old_connections()  # a database that went away and came back: a new connection
        beat(engine.default_host())
        watch.check()
        stop.wait(every)


def start_thread(*, every: float = HEARTBEAT_SECONDS) -> threading.Event:
    return threads.supervised("host-heartbeat", lambda stop: loop(stop, every=every))
