"""Waiting for something the panel does in another process or thread."""

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], *, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
