"""Changing a sandbox's network mode, live: a running sandbox is moved between the panel's
bridge and no network at once (well within a second), without a restart, and the change is
audited. Joining the bridge is refused unless the host's egress rules are exactly in place."""

from django.conf import settings
from django.db import transaction

from teams.permissions import Role, authorize

from .. import egress, engine, live
from ..models import Sandbox
from .common import InvalidInput, SandboxError, audit

S = Sandbox.Status


def sandbox_set_network(*, actor, sandbox: Sandbox, mode: str, source_ip: str | None = None) -> Sandbox:
    authorize(actor, sandbox.team, Role.OPERATOR)
    if mode not in Sandbox.Network.values:
        raise InvalidInput({"network_mode": [f"Network: one of {', '.join(Sandbox.Network.values)}."]})
    if mode == sandbox.network_mode:
        return sandbox
    if sandbox.pending_action or sandbox.status in (S.DESTROYED, S.DESTROYING, S.CREATING):
        raise SandboxError(f"{sandbox.name} is busy ({sandbox.pending_action or sandbox.status}); change its network when it is idle.")
    docker = engine.engine_for(sandbox)
    live_change = sandbox.status in (S.RUNNING, S.PAUSED) and bool(sandbox.container_id)
    if mode == Sandbox.Network.INTERNET and egress.enforced():
        wrong = egress.problems() if docker.host.is_local else ["the engine is not on this machine"]
        if wrong:
            raise SandboxError("The egress rules are not in place (" + "; ".join(wrong) + "); the sandbox stays off the network.")
    if live_change:
        if mode == Sandbox.Network.INTERNET:
            docker.ensure_network(settings.SANDBOX_NETWORK, subnet=settings.SANDBOX_SUBNET, bridge=settings.SANDBOX_BRIDGE)
            docker.switch_network(sandbox.container_id, leave="none", join=settings.SANDBOX_NETWORK)
        else:
            docker.switch_network(sandbox.container_id, leave=settings.SANDBOX_NETWORK, join="none")
    with transaction.atomic():
        before = sandbox.network_mode
        if not Sandbox.objects.filter(pk=sandbox.pk, network_mode=before, pending_action="").update(network_mode=mode):
            raise SandboxError(f"{sandbox.name} changed meanwhile; try again.")
        sandbox.network_mode = mode
        audit(actor, "sandbox.network_changed", sandbox, {"from": before, "to": mode, "live": live_change}, source_ip)
        live.sandbox_changed(sandbox)
    return sandbox
