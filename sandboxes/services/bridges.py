"""The Docker network of each network mode: its name, making it, and what keeps a sandbox off
it (the host's egress rules, its bridge, the allowlist mode's resolver)."""

from django.conf import settings

from .. import network
from ..models import Sandbox


def network_of(mode: str) -> str:
    """The Docker network of a network mode: the internet bridge, the allowlist bridge, or none."""
    networks: dict[str, str] = {
        Sandbox.Network.INTERNET: settings.SANDBOX_NETWORK,
        Sandbox.Network.ALLOWLIST: settings.SANDBOX_ALLOW_NETWORK,
    }
    return networks.get(mode, "none")


def egress_problems(mode: str, *, bridge: bool = False) -> list[str]:
    """What keeps a sandbox in `mode` off its network, in words (empty: it may join): the rules
    of both bridges not exactly in place, its bridge missing under its name (`bridge`: once the
    network was made), or, for allowlist mode, the panel's own resolver not holding its port."""
    from ..network import resolver

    try:
        wrong = network.problems()
    except network.EgressError as exc:
        wrong = [str(exc)]
    name = settings.SANDBOX_ALLOW_BRIDGE if mode == Sandbox.Network.ALLOWLIST else settings.SANDBOX_BRIDGE
    if bridge and not network.bridge_present(name):
        wrong.append(f"the bridge interface {name} is missing (renamed?), so the rules match nothing")
    if mode == Sandbox.Network.ALLOWLIST and (why := resolver.probe()):
        wrong.append(why)  # its names are asked of nobody else
    return wrong


def ensure_network_of(docker, mode: str) -> None:
    """Make the Docker network of `mode` if it is missing (no network needs none)."""
    if mode == Sandbox.Network.INTERNET:
        docker.ensure_network(settings.SANDBOX_NETWORK, subnet=settings.SANDBOX_SUBNET, bridge=settings.SANDBOX_BRIDGE)
    elif mode == Sandbox.Network.ALLOWLIST:
        docker.ensure_network(settings.SANDBOX_ALLOW_NETWORK, subnet=settings.SANDBOX_ALLOW_SUBNET, bridge=settings.SANDBOX_ALLOW_BRIDGE)
