"""The disk-quota watch: a periodic read of each sandbox's use of its quota, on the machine whose
storage pool holds it (storage.pool reads the pool's own accounting, no process started), which
audits `sandbox.quota_high` when a sandbox crosses SANDBOX_DISK_WARN_PERCENT (90 %, the share
at which its checklist fails) — once per crossing, not at every run. Its state is re-armed once
use falls back below the share less a margin, so a sandbox hovering at the line is not told
again at every wobble. The audit event is what webhooks hear (webhooks.events)."""

from django.conf import settings
from django.db import transaction

from sandboxes.models import Sandbox
from sandboxes.services.auditing import audit
from storage import pool
from teams.permissions import SystemActor

from .models import QuotaWatch

S = Sandbox.Status
REARM_MARGIN = 5  # percentage points below the share before a new crossing counts


def quota_watch(*, host_name: str) -> int:
    """Read the quota use of `host_name`'s sandboxes in the storage pool; how many crossed."""
    if not pool.active():
        return 0
    share = settings.SANDBOX_DISK_WARN_PERCENT
    rows = Sandbox.objects.filter(host__name=host_name).exclude(status__in=[S.DESTROYED, S.DESTROYING]).exclude(disk_group="")
    high = set(QuotaWatch.objects.filter(high=True, sandbox__in=rows).values_list("sandbox_id", flat=True))
    crossed = 0
    for sandbox in rows:
        usage = pool.usage(sandbox.disk_group)
        percent = usage.percent if usage is not None else None
        if usage is None or percent is None:
            continue
        if percent >= share and sandbox.pk not in high:
            crossed += _mark(sandbox, high=True, usage=usage)
        elif percent < share - REARM_MARGIN and sandbox.pk in high:
            _mark(sandbox, high=False, usage=usage)
    return crossed


def _mark(sandbox: Sandbox, *, high: bool, usage: pool.Usage) -> int:
    """Turn the sandbox's state to `high` (a guarded write: two watchers audit one crossing)."""
    with transaction.atomic():
        watch, _ = QuotaWatch.objects.get_or_create(sandbox=sandbox)
        if not QuotaWatch.objects.filter(pk=watch.pk, high=not high).update(high=high):
            return 0
        if high:
            audit(
                SystemActor("quota"),
                "sandbox.quota_high",
                sandbox,
                {
                    "used_mb": round(usage.used / 1048576),
                    "limit_mb": round((usage.limit or 0) / 1048576),
                    "percent": round(usage.percent or 0.0, 1),
                },
            )
    return 1
