"""Whether a host answers, and what becomes of its sandboxes when it does not.

A host is unreachable once it has beaten at least once (its events watcher runs, here or as its
host agent) and its last beat is stale (older than three beats: the watcher, its machine or the
network between is away) or says its engine did not answer. A host that never beat is unknown,
not unreachable: a panel whose watcher is not started yet works as before hosts.

Its sandboxes are never changed for it: their rows keep their status, the pages show them
"unreachable" with the reason and offer no action, and the services refuse actions on them, so
that no work is queued for a machine that cannot take it. When its beats come back they show as
they were. The panel machine's watcher notices each change (`Watch`): it is audited, and the
open pages of the host's sandboxes are told.
"""

import logging
import threading
from datetime import datetime

from django.utils import timezone

from audit.services import audit_record

from .models import Host
from .selectors import STALE_AFTER, is_stale

log = logging.getLogger(__name__)


def unreachable_reason(host: Host, *, now: datetime | None = None) -> str:
    """Why `host` is unreachable, in words; "" when it answers or never beat."""
    beat = host.last_heartbeat
    if beat is None:
        return ""
    now = now or timezone.now()
    if is_stale(beat, now=now):
        seconds = int((now - beat).total_seconds())
        return f"Host {host.name} is unreachable: no heartbeat for {seconds} s (its events watcher, its machine or the network is away)."
    if host.last_error:
        return f"Host {host.name} is unreachable: {host.last_error}"
    return ""


class Watch:
    """Run by the panel machine's watcher at every beat: which hosts became unreachable or came
    back since the last look. The first look only learns (a restarted watcher audits nothing it
    did not see change)."""

    def __init__(self) -> None:
        self.down: set[int] | None = None
        self.lock = threading.Lock()

    def check(self) -> tuple[list[Host], list[Host]]:
        """Returns (became unreachable, came back)."""
        now = timezone.now()
        hosts = list(Host.objects.only("pk", "name", "last_heartbeat", "last_error"))
        down = {h.pk: unreachable_reason(h, now=now) for h in hosts}
        now_down = {pk for pk, reason in down.items() if reason}
        with self.lock:
            before, self.down = self.down, now_down
        if before is None:
            return [], []
        lost = [h for h in hosts if h.pk in now_down - before]
        back = [h for h in hosts if h.pk in before - now_down]
        for host in lost:
            _tell(host, "host.unreachable", {"reason": down[host.pk]})
        for host in back:
            _tell(host, "host.recovered", {"heartbeat": host.last_heartbeat.isoformat() if host.last_heartbeat else None})
        return lost, back


def _tell(host: Host, action: str, details: dict) -> None:
    from sandboxes import live
    from sandboxes.models import Sandbox

    log.warning("%s: %s", action, host.name)
    audit_record(actor=None, actor_name="hosts", action=action, target=f"host {host.name}", details=details)
    for sandbox in Sandbox.objects.filter(host=host).exclude(status=Sandbox.Status.DESTROYED).only("pk", "team_id"):
        live.sandbox_changed(sandbox)


__all__ = ["STALE_AFTER", "Watch", "unreachable_reason"]
