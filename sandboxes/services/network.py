"""Changing a sandbox's network mode, live: a running sandbox is moved between the internet
bridge, the allowlist bridge and no network at once (well within a second), without a restart,
and the change is audited. Joining a bridge is refused unless the gate (network.may_join, the
same as a start's) lets it: the host's egress rules exactly in place."""

import logging

from django.db import transaction

from teams.permissions import Role, authorize

from .. import engine, live, network
from ..models import Sandbox
from .allowlist import authorize_egress, sync_grants
from .auditing import audit
from .errors import InvalidInput, SandboxError

log = logging.getLogger(__name__)

S = Sandbox.Status


def sandbox_set_network(*, actor, sandbox: Sandbox, mode: str, source_ip: str | None = None) -> Sandbox:
    authorize(actor, sandbox.team, Role.OPERATOR)
    if mode not in Sandbox.Network.values:
        raise InvalidInput({"network_mode": [f"Network: one of {', '.join(Sandbox.Network.values)}."]})
    if mode == sandbox.network_mode:
        return sandbox
    authorize_egress(actor, sandbox, mode=mode)
    if sandbox.on_hold:
        raise SandboxError(f"{sandbox.name} is held by an open incident; its network changes only through the incident.")
    if sandbox.pending_action or sandbox.status in (S.DESTROYED, S.DESTROYING, S.CREATING):
        raise SandboxError(f"{sandbox.name} is busy ({sandbox.pending_action or sandbox.status}); change its network when it is idle.")
    docker = engine.engine_for(sandbox)
    live_change = sandbox.status in (S.RUNNING, S.PAUSED) and bool(sandbox.container_id)
    decision = network.may_join(mode, local_engine=docker.host.is_local)
    if not decision.allowed:
        raise SandboxError(f"{decision.reason} The sandbox stays off the network." if decision.problems else decision.reason)
    if live_change and mode == Sandbox.Network.ALLOWLIST and network.enforced() and network.docker_asks_loopback():
        try:
            names_servers = (docker.inspect_container(sandbox.container_id).get("HostConfig") or {}).get("Dns") or []
        except engine.EngineError as exc:
            raise SandboxError(f"The network of {sandbox.name} could not be changed: {exc}") from exc
        if names_servers != [network.allow_gateway()]:
            raise SandboxError(
                "This machine's name server is on loopback, which Docker asks from outside the sandbox's rules: "
                f"stop {sandbox.name}, change its network, then start it (it is made to ask only the panel's resolver)."
            )
    old_net, new_net = network.network_of(sandbox.network_mode), network.network_of(mode)
    if live_change and mode == Sandbox.Network.ALLOWLIST and network.enforced():
        try:
            sync_grants()  # no grant of an earlier holder of the address it is about to get
        except (network.EgressError, engine.EngineError) as exc:
            raise SandboxError(f"The allowlist grants could not be brought in line ({exc}); the sandbox stays where it is.") from exc
    if live_change:
        try:
            network.ensure_network_of(docker, mode)
            docker.switch_network(sandbox.container_id, leave=old_net, join=new_net)
        except engine.EngineError as exc:
            _undo(docker, sandbox, leave=new_net, join=old_net)
            raise SandboxError(f"The network of {sandbox.name} could not be changed: {exc}") from exc
    with transaction.atomic():
        before = sandbox.network_mode
        changed = Sandbox.objects.filter(pk=sandbox.pk, network_mode=before, pending_action="", on_hold=False).update(network_mode=mode)
        if not changed:
            if live_change:  # something claimed it meanwhile: Docker goes back to what the row says
                _undo(docker, sandbox, leave=new_net, join=old_net)
            raise SandboxError(f"{sandbox.name} changed meanwhile; try again.")
        sandbox.network_mode = mode
        audit(actor, "sandbox.network_changed", sandbox, {"from": before, "to": mode, "live": live_change}, source_ip)
    if live_change and Sandbox.Network.ALLOWLIST in (before, mode) and network.enforced():
        try:
            sync_grants()  # its listed CIDRs for its new address; nothing left for its old one
        except (network.EgressError, engine.EngineError) as exc:
            log.error("grants not brought in line after %s changed network: %s", sandbox.name, exc)
    live.sandbox_changed(sandbox)
    return sandbox


def _undo(docker, sandbox: Sandbox, *, leave: str, join: str) -> None:
    """Put the container back where its row says it is; if even that fails, it leaves every
    network (fail closed: off the network is always safe)."""
    try:
        docker.switch_network(sandbox.container_id, leave=leave, join=join)
    except engine.EngineError:
        for name in network.networks():
            try:
                docker.switch_network(sandbox.container_id, leave=name, join="none")
            except engine.EngineError:
                pass  # not on it, or the container is gone: nothing of it is on that network
