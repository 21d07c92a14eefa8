"""Notices a change to the panel's egress rules within a second and repairs it then.

The periodic check (every 30 s) compares the rules with what they should be; between two checks
a rule deleted by hand left the host, or every address an allowlist sandbox was not granted,
open. This loop, a thread of the events watcher, reads `egress.fingerprint()` (one
`iptables-save`, ~4 ms) every CHECK_EVERY seconds and, when it differs from the last reading,
runs the full check and repair (services.egress_repair: audited, and failing closed). Reading
again only what it saw *before* the repair, it never takes a change made during a repair for
one it has judged.
"""

import logging
import threading

from django.db import close_old_connections

from . import egress

log = logging.getLogger(__name__)
CHECK_EVERY = 0.5  # seconds: a change is repaired well within 2 s


def watch(stop: threading.Event, *, every: float = CHECK_EVERY) -> None:
    """Until `stop` is set: repair the rules whenever what iptables shows of them changes."""
    from .services import egress_repair

    seen: str | None = None
    while not stop.is_set():
        try:
            now = egress.fingerprint()
        except egress.EgressError as exc:
            now = f"unreadable: {exc}"  # judged once by the repair (it fails closed), then again only when it changes
        if now != seen:
            close_old_connections()
            egress_repair()
            seen = now
        stop.wait(every)


def start_thread() -> threading.Event:
    """Watch in a daemon thread (the events watcher's) when this panel enforces the rules."""
    stop = threading.Event()

    def run():
        while not stop.is_set():
            try:
                watch(stop)
            except Exception:  # noqa: BLE001 - the watcher must outlive a bad moment (the database away); retry
                log.exception("the egress rules' watch stopped; starting it again in 5 s")
                stop.wait(5)

    if egress.enforced():
        threading.Thread(target=run, name="egress-watch", daemon=True).start()
    return stop
