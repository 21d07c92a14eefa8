"""What this host is on the network: its bridges, its own addresses and the LAN it sits on."""

import ipaddress
import os

from django.conf import settings

from .commands import run_ip
from .rules import BLOCKED_RANGES


def bridge_present(bridge: str) -> bool:
    """The rules match the bridge by its name: it must exist under that name."""
    return os.path.isdir(f"/sys/class/net/{bridge}")


def enforced() -> bool:
    """Whether this panel filters egress (SANDBOX_EGRESS_RULES; on unless an admin turned it off)."""
    return bool(settings.SANDBOX_EGRESS_RULES)


def _addresses_and_default_devices() -> tuple[list[tuple[str, ipaddress.IPv4Interface]], set[str]]:
    """(device, address/prefix) of every IPv4 address of the host, on any interface, and the
    devices its default routes leave by, read at one moment by one `ip -batch` (every start's
    egress check waits for this: one process, not one for each)."""
    addresses: list[tuple[str, ipaddress.IPv4Interface]] = []
    devices: set[str] = set()
    for line in run_ip("-batch", "-", stdin="addr show\nroute show default\n").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0][:-1].isdigit() and parts[0].endswith(":") and parts[2] == "inet":
            addresses.append((parts[1], ipaddress.IPv4Interface(parts[3])))
        elif parts and parts[0] == "default":  # one line even with several next hops (-o)
            devices.update(parts[i + 1] for i, word in enumerate(parts[:-1]) if word == "dev")
    return addresses, devices


def lan_subnets() -> list[str]:
    """The IPv4 subnets of the interfaces that carry a default route: the network the host sits
    on, which a sandbox must not reach even when its addresses are public."""
    addresses, devices = _addresses_and_default_devices()
    found = set()
    for device, address in addresses:
        if device in devices and not any(address.network.subnet_of(ipaddress.IPv4Network(r)) for r in BLOCKED_RANGES):
            found.add(str(address.network))
    return sorted(found)


def host_addresses() -> list[str]:
    """Every IPv4 address of the host's own, on any interface (a VPN's, a test's): traffic to
    them goes to the host (INPUT), which refuses sandboxes whatever their list grants."""
    return sorted({str(address.ip) for _, address in _addresses_and_default_devices()[0]})


def dropped_ranges() -> list[str]:
    return [*BLOCKED_RANGES, *lan_subnets()]
