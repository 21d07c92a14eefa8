"""The audit event of a write to a sandbox: every service, here and in the other apps, records
through this one helper, so each event carries the sandbox's UUID and team."""

from audit.services import audit_record
from teams.permissions import actor_name, actor_user

from ..models import Sandbox


def audit(actor, action: str, sandbox: Sandbox, details: dict | None = None, source_ip: str | None = None) -> None:
    """An audit event about `sandbox`, tied to its UUID and its team."""
    audit_record(
        actor=actor_user(actor),
        actor_name=actor_name(actor),
        action=action,
        target=sandbox.name,
        sandbox_uuid=sandbox.uuid,
        team_id=sandbox.team_id,
        details=details,
        source_ip=source_ip,
    )
