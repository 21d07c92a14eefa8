"""Notices a change to the panel's egress rules within a second and repairs it then.

The periodic check (every 30 s) compares the rules with what they should be; between two checks
a rule deleted by hand left the host, or every address an allowlist sandbox was not granted,
open. This loop, a thread of the events watcher, reads `iptables.fingerprint()` (one
`iptables-save`, ~4 ms) every CHECK_EVERY seconds and, when it differs from the last reading,
runs the full check and repair (services.egress_repair: audited, and failing closed). It
compares later readings with the one taken *before* the check, so a change made during it is
never taken for one it judged, and after a repair that changed something it checks once more
whatever the next reading shows. A program fighting the panel over the rules gets a repair every
REFILL_SECONDS once BURST repairs were spent, not an audit event every half second.
"""

import threading
import time

from django.db import close_old_connections

from . import commands, host, iptables, threads

CHECK_EVERY = 0.5  # seconds: a change is repaired well within 2 s
# A program that keeps undoing the rules (a fight) may not make the panel repair and audit twice
# a second: repairs that found something wrong are paid from a bucket of this many, refilled one
# every REFILL_SECONDS. A check that finds the rules in place (another panel's jump moved, the
# reading after our own repair) costs nothing.
BURST = 10
REFILL_SECONDS = 3.0


def watch(stop: threading.Event, *, every: float = CHECK_EVERY) -> None:
    """Until `stop` is set: repair the rules whenever what iptables shows of them changes."""
    from ..services import egress_repair

    seen: str | None = None
    tokens, at = float(BURST), time.monotonic()
    while not stop.is_set():
        try:
            now = iptables.fingerprint()
        except commands.EgressError as exc:
            now = f"unreadable: {exc}"  # judged once by the repair (it fails closed), then again only when it changes
        tokens, at = min(BURST, tokens + (time.monotonic() - at) / REFILL_SECONDS), time.monotonic()
        if now != seen and tokens >= 1:
            close_old_connections()
            seen = now
            if egress_repair():
                # Judged again at the next reading, whatever it shows: the rules may already be
                # back to what was read before this repair (a program that deletes them again).
                tokens, seen = tokens - 1, None
        stop.wait(every)


def start_thread() -> threading.Event:
    """Watch in a daemon thread (the events watcher's) when this panel enforces the rules."""
    return threads.supervised("egress-watch", watch) if host.enforced() else threading.Event()
