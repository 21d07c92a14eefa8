"""The decision log: every connection the host's egress rules refuse, per sandbox.

The rules (sandboxes.network) send each refusal through a chain that logs it to the kernel's log
with this bridge's prefix (at most rules.LOG_RATE a second) before dropping it. `follow()`,
run by the events watcher, reads the kernel's log (/dev/kmsg, from its end), finds the sandbox
by its address on the bridge, and records (sandbox, time, destination, port, protocol), one row
per burst of alike attempts within a second. Rows older than DECISION_LOG_DAYS go. Every row
is paid for from the panel-wide budget (sandboxes.network.decision_budget), shared with the resolver.
"""

import errno
import logging
import os
import re
import select
import threading
import time
from datetime import datetime, timedelta

from django.db import close_old_connections
from django.utils import timezone

from .. import engine
from ..models import EgressDenial, Sandbox
from . import bridges, decision_budget, host, threads

log = logging.getLogger(__name__)
KMSG = "/dev/kmsg"
LINE_RE = re.compile(
    r"ccpd:(?P<bridge>\S+) .*?\bSRC=(?P<src>[0-9.]+) DST=(?P<dst>[0-9.]+) .*?\bPROTO=(?P<proto>[A-Za-z0-9]+)(?:.*?\bDPT=(?P<dpt>\d+))?"
)
KEEP_DAYS = 30


def networks_by_bridge() -> dict[str, str]:
    """This panel's bridges (as the log's prefix names them) and their Docker networks."""
    return {b.bridge: b.network for b in bridges.table()}


class Recorder:
    """Turns log lines into rows: sandbox by source address (cached for a few seconds), alike
    attempts within a second folded into one row with a count."""

    def __init__(self):
        self.addresses: dict[tuple[str, str], int] = {}
        self.addresses_at = 0.0
        self.pending: dict[tuple[int, str, int | None, str], list] = {}
        self.written = 0

    def _sandbox_for(self, bridge: str, address: str) -> int | None:
        if (bridge, address) not in self.addresses or time.monotonic() - self.addresses_at > 5:
            found: dict[tuple[str, str], int] = {}
            for name, network in networks_by_bridge().items():
                try:
                    containers = engine.engine_for().inspect_network(network).get("Containers") or {}
                except engine.EngineError:
                    containers = {}
                by_container = dict(Sandbox.objects.filter(container_id__in=list(containers)).values_list("container_id", "pk"))
                for cid, info in containers.items():
                    ip = (info.get("IPv4Address") or "").split("/")[0]
                    if ip and cid in by_container:
                        found[(name, ip)] = by_container[cid]
            self.addresses, self.addresses_at = found, time.monotonic()
        return self.addresses.get((bridge, address))

    def line(self, text: str, at: datetime | None = None) -> bool:
        match = LINE_RE.search(text)
        if match is None or match["bridge"] not in networks_by_bridge():
            return False
        sandbox_id = self._sandbox_for(match["bridge"], match["src"])
        if sandbox_id is None:
            return False
        key = (sandbox_id, match["dst"], int(match["dpt"]) if match["dpt"] else None, match["proto"].lower())
        entry = self.pending.get(key)
        if entry is None:
            self.pending[key] = [at or timezone.now(), 1]
        else:
            entry[1] += 1
        return True

    def flush(self) -> int:
        budget = decision_budget.budget()
        rows = [
            EgressDenial(sandbox_id=k[0], destination=k[1], port=k[2], protocol=k[3], at=v[0], count=v[1])
            for k, v in self.pending.items()
            if budget.take(k[0], v[1])
        ]
        self.pending.clear()
        if rows:
            EgressDenial.objects.bulk_create(rows)
            self.written += len(rows)
            if self.written >= 1000:
                self.written = 0
                EgressDenial.objects.filter(at__lt=timezone.now() - timedelta(days=KEEP_DAYS)).delete()
        return len(rows)


def follow(stop: threading.Event, *, path: str = KMSG, ready: threading.Event | None = None) -> None:
    """Read the kernel's log from its end until `stop` is set, recording refusals."""
    if not host.enforced():
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        log.warning("the decision log is off: %s cannot be read (%s)", path, exc)
        return
    recorder = Recorder()
    try:
        os.lseek(fd, 0, os.SEEK_END)
        if ready is not None:
            ready.set()
        last_flush = time.monotonic()
        while not stop.is_set():
            readable, _, _ = select.select([fd], [], [], 0.5)
            if readable:
                try:
                    record = os.read(fd, 8192)
                except BlockingIOError:
                    record = b""
                except OSError as exc:
                    if exc.errno != errno.EPIPE:  # EPIPE: older records were overwritten; go on
                        raise
                    record = b""
                if record:
                    recorder.line(record.decode("utf-8", "replace").split(";", 1)[-1])
            if recorder.pending and (time.monotonic() - last_flush >= 1 or not readable):
                close_old_connections()
                recorder.flush()
                last_flush = time.monotonic()
            if decision_budget.budget().pending():  # what was over the budget, this reader's and the resolver's
                close_old_connections()
                decision_budget.budget().flush()
    finally:
        os.close(fd)
        if recorder.pending:
            recorder.flush()


def start_thread() -> threading.Event:
    """Follow in a daemon thread (the events watcher's); returns the event that stops it."""
    return threads.supervised("egress-decision-log", follow)
