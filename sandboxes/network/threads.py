"""The events watcher's helpers run each in a daemon thread of its own (see watch_engine)."""

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)
RETRY_SECONDS = 5


def supervised(name: str, target: Callable[[threading.Event], None]) -> threading.Event:
    """Run `target(stop)` in a daemon thread named `name` until it returns (it should once
    `stop` is set); one that raises is logged and run again RETRY_SECONDS later, since the
    watcher must outlive a bad moment (the database away). Returns `stop`."""
    stop = threading.Event()

    def run():
        while not stop.is_set():
            try:
                target(stop)
                return
            except Exception:  # logged, then tried again
                log.exception("%s stopped; starting it again in %d s", name, RETRY_SECONDS)
                stop.wait(RETRY_SECONDS)

    threading.Thread(target=run, name=name, daemon=True).start()
    return stop
