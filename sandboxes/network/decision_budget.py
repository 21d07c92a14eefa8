"""The decision log's budget for the whole panel, beside the limits each writer keeps per sandbox.

Both writers of EgressDenial rows, the kernel-log reader (sandboxes.network.decision_log) and the resolver
(sandboxes.network.resolver), run in the events watcher's process, and both ask this one token bucket
before every write (a new row, or a count added to one): at most DECISION_LOG_ROWS_A_SECOND
writes a second, in bursts of up to twice that, for all sandboxes together. Many sandboxes each
within their own limit therefore cannot together keep the database busy. What the bucket
refuses is not lost: it is counted per sandbox, and `flush()` writes one row (protocol
"unlogged", the count in `count`) for one sandbox at most once a second, so the log still says
how many refusals it did not itemise. In all: at most the rate plus one row a second.

The credential proxy (sandboxes.network.proxy) runs in a process of its own and pays its rows
from a budget of the same size in that process: together at most twice the rate.
"""

import logging
import threading
import time

from django.conf import settings
from django.utils import timezone

from ..models import EgressDenial, Sandbox

log = logging.getLogger(__name__)
UNLOGGED = "unlogged"  # the protocol of a summary row: refusals over the budget, counted
SUMMARY_EVERY = 1.0  # seconds between two summary rows


class RowBudget:
    """A token bucket of writes, and the refusals it turned away, counted per sandbox."""

    def __init__(self, rate: float | None = None, burst: float | None = None):
        self.rate = float(rate if rate is not None else settings.DECISION_LOG_ROWS_A_SECOND)
        self.burst = float(burst if burst is not None else 2 * self.rate)
        self.tokens = self.burst
        self.at = time.monotonic()
        self.lock = threading.Lock()
        self.dropped: dict[int, int] = {}  # sandbox -> refusals not itemised, oldest sandbox first
        self.summarised_at = 0.0

    def take(self, sandbox_id: int, count: int = 1) -> bool:
        """True: write now. False: over the budget; the `count` refusals are counted instead."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            if not self.dropped:
                log.warning("the decision log is over its budget of %g rows a second; counting the rest", self.rate)
            self.dropped[sandbox_id] = self.dropped.get(sandbox_id, 0) + count
            return False

    def flush(self) -> EgressDenial | None:
        """Write the summary row of the sandbox that has waited longest, if a second has passed
        since the last one. Called often (every half second by the kernel-log reader)."""
        with self.lock:
            now = time.monotonic()
            if not self.dropped or now - self.summarised_at < SUMMARY_EVERY:
                return None
            sandbox_id = next(iter(self.dropped))
            count = self.dropped.pop(sandbox_id)
            self.summarised_at = now
        try:
            if not Sandbox.objects.filter(pk=sandbox_id).exists():
                return None  # its row was deleted meanwhile: nobody to tell
            return EgressDenial.objects.create(sandbox_id=sandbox_id, at=timezone.now(), protocol=UNLOGGED, count=count)
        except Exception:  # the database is away: count them again, for the next try
            log.warning("could not write the decision log's summary for sandbox %s", sandbox_id, exc_info=True)
            with self.lock:
                self.dropped[sandbox_id] = self.dropped.get(sandbox_id, 0) + count
            return None

    def pending(self) -> int:
        with self.lock:
            return sum(self.dropped.values())


_budget: RowBudget | None = None
_budget_lock = threading.Lock()


def budget() -> RowBudget:
    """The one budget of this process (the events watcher's), made on first use."""
    global _budget
    with _budget_lock:
        if _budget is None:
            _budget = RowBudget()
        return _budget
