"""What a webhook can be told about, and which audit events tell it.

The audit trail is the one hook point: every write the panel makes lands there in the same
transaction as the change (audit.services.audit_record), so a mapping from audit actions to
webhook events, read there, sees every occurrence without a call sprinkled through the code.
Plain values only: audit.services imports this module, and nothing here imports a model.
"""

from typing import Any

SANDBOX_DIED = "sandbox.died"
SANDBOX_OOM = "sandbox.oom_killed"
SANDBOX_QUOTA_HIGH = "sandbox.quota_high"
INCIDENT_DECLARED = "incident.declared"
INCIDENT_CLOSED = "incident.closed"
EGRESS_FAILED = "egress.failed"
BACKUP_FAILED = "backup.failed"

# The fixed list a webhook chooses from: (event, what it means), in the order the page shows.
EVENTS: tuple[tuple[str, str], ...] = (
    (SANDBOX_DIED, "A sandbox's container stopped or was removed without the panel stopping it"),
    (SANDBOX_OOM, "A process in a sandbox was killed for want of memory"),
    (SANDBOX_QUOTA_HIGH, "A sandbox uses 90 % of its disk quota (once per crossing)"),
    (INCIDENT_DECLARED, "An incident was declared"),
    (INCIDENT_CLOSED, "An incident was closed"),
    (EGRESS_FAILED, "The host's egress rules could not be applied (sandboxes on the network were stopped)"),
    (BACKUP_FAILED, "A backup failed"),
)
EVENT_NAMES = frozenset(name for name, _ in EVENTS)

# Events about the host, not one team: they go to every team's webhooks that chose them.
HOST_WIDE = frozenset({EGRESS_FAILED})

# What of the audit event's details a payload carries, per webhook event. Only these: details
# may name the host's internals (an iptables error) that a team's receiver has no need of.
PAYLOAD_DETAILS: dict[str, tuple[str, ...]] = {
    SANDBOX_DIED: ("from", "to", "reason"),
    SANDBOX_OOM: (),
    SANDBOX_QUOTA_HIGH: ("used_mb", "limit_mb", "percent"),
    INCIDENT_DECLARED: ("incident", "severity", "summary"),
    INCIDENT_CLOSED: ("incident", "resolution"),
    EGRESS_FAILED: (),
    BACKUP_FAILED: ("backup", "detail"),
}

# A burst of one event about one sandbox is told once per this many seconds per webhook (a
# container thrashing against its memory limit is OOM-killed many times a minute).
COALESCE_SECONDS: dict[str, int] = {SANDBOX_OOM: 60}

_BY_ACTION = {
    "container.oom": SANDBOX_OOM,
    "sandbox.quota_high": SANDBOX_QUOTA_HIGH,
    "incident.declared": INCIDENT_DECLARED,
    "incident.closed": INCIDENT_CLOSED,
    "egress.failed": EGRESS_FAILED,
    "backup.failed": BACKUP_FAILED,
}
_UP = ("running", "paused")
_DOWN = ("stopped", "error")


def webhook_event(action: str, details: dict[str, Any] | None) -> str | None:
    """The webhook event an audit event is, or None.

    "Died" is read from `sandbox.state_changed` (up to down), not from Docker's `container.die`:
    Docker reports a die for every stop the panel makes too, while the reconciler writes that
    change only when a container went down with no action of the panel under way (it exited,
    was OOM-killed or removed by hand, or the egress rules failing stopped it)."""
    if action == "sandbox.state_changed":
        details = details or {}
        return SANDBOX_DIED if details.get("from") in _UP and details.get("to") in _DOWN else None
    return _BY_ACTION.get(action)
