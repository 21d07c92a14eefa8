"""The panel's networks, in one table: for each network mode that has one, the Docker network,
the Linux bridge interface it is made on and its subnet.

The egress rules match a bridge by its interface name, Docker attaches containers by the
network's name, and the resolver and the decision log tell sandboxes apart by subnet and
bridge: every place that needs two of these reads them here, from the same row, so the two
names of one network never drift apart. Read from settings at each call (an admin's
SANDBOX_NETWORK / SANDBOX_BRIDGE / SANDBOX_SUBNET, their SANDBOX_ALLOW_* twins, and each test
slot's own).
"""

import ipaddress
from dataclasses import dataclass

from django.conf import settings

NO_NETWORK = "none"  # Docker's name for "no network but loopback", and the mode's


@dataclass(frozen=True)
class Bridge:
    mode: str  # the network mode whose sandboxes join it (Sandbox.Network's value)
    network: str  # Docker's name of the network
    bridge: str  # the Linux interface Docker makes it on; the rules match this name
    subnet: str

    @property
    def gateway(self) -> str:
        """The bridge's own address: the subnet's first (Docker's default, asked for explicitly
        by engine.ensure_network); on the allowlist bridge, where the panel's resolver answers."""
        return str(next(ipaddress.IPv4Network(self.subnet).hosts()))


def table() -> tuple[Bridge, Bridge]:
    """The internet mode's bridge, then the allowlist mode's."""
    from ..models import Sandbox  # at call time: importing sandboxes.network loads no model

    return (
        Bridge(Sandbox.Network.INTERNET, settings.SANDBOX_NETWORK, settings.SANDBOX_BRIDGE, settings.SANDBOX_SUBNET),
        Bridge(Sandbox.Network.ALLOWLIST, settings.SANDBOX_ALLOW_NETWORK, settings.SANDBOX_ALLOW_BRIDGE, settings.SANDBOX_ALLOW_SUBNET),
    )


def internet_bridge() -> Bridge:
    return table()[0]


def allowlist_bridge() -> Bridge:
    return table()[1]


def bridge_of(mode: str) -> Bridge | None:
    """The bridge a sandbox in `mode` joins; None for `none` (and anything else)."""
    return next((b for b in table() if b.mode == mode), None)


def network_of(mode: str) -> str:
    """The Docker network of a network mode: the internet bridge's, the allowlist bridge's, or none."""
    found = bridge_of(mode)
    return found.network if found else NO_NETWORK


def networks() -> tuple[str, ...]:
    """The Docker networks of this panel's sandboxes, every one of them."""
    return tuple(b.network for b in table())


def ensure_network_of(docker, mode: str) -> None:
    """Make the Docker network of `mode` (on its bridge, in its subnet) if it is missing; none for
    `none`. `docker` is the sandbox's engine (engine_for)."""
    if (bridge := bridge_of(mode)) is not None:
        docker.ensure_network(bridge.network, subnet=bridge.subnet, bridge=bridge.bridge)
