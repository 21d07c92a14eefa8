"""How many events one sandbox may have recorded: a token bucket per sandbox, as the decision
log's budget (sandboxes.network.decision_budget) is one for the whole panel. A request over it is
refused whole (429) and records nothing, so the exporter's retry sends it again later."""

import time

from django.conf import settings


class EventBudget:
    def __init__(self, rate: float | None = None, burst: float | None = None):
        self.rate = float(rate if rate is not None else settings.AGENT_EVENTS_A_SECOND)
        self.burst = float(burst if burst is not None else settings.AGENT_EVENTS_BURST)
        self.buckets: dict[int, tuple[float, float]] = {}  # sandbox -> (tokens, when)

    def take(self, sandbox_id: int, count: int) -> bool:
        """True: `count` events may be recorded now (and are paid for). The receiver's one event
        loop is the only caller: no lock."""
        now = time.monotonic()
        tokens, at = self.buckets.get(sandbox_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if count > tokens:
            self.buckets[sandbox_id] = (tokens, now)
            return False
        self.buckets[sandbox_id] = (tokens - count, now)
        return True

    def left(self, sandbox_id: int) -> bool:
        """Whether the sandbox may have at least one event recorded now (nothing is paid): the
        receiver asks before it reads a body, so a sandbox past its budget costs no parsing."""
        tokens, at = self.buckets.get(sandbox_id, (self.burst, time.monotonic()))
        return min(self.burst, tokens + (time.monotonic() - at) * self.rate) >= 1

    def forget(self, sandbox_id: int) -> None:
        self.buckets.pop(sandbox_id, None)
