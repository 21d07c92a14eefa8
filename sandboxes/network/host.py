"""What this host is on the network: its bridges, its own addresses and the LAN it sits on."""

import ipaddress
import os
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from .commands import run_ip
from .rules import BLOCKED_RANGES


def bridge_present(bridge: str) -> bool:
    """The rules match the bridge by its name: it must exist under that name."""
    return os.path.isdir(f"/sys/class/net/{bridge}")


def enforced() -> bool:
    """Whether this panel filters egress (SANDBOX_EGRESS_RULES; on unless an admin turned it off)."""
    return bool(settings.SANDBOX_EGRESS_RULES)


def _interface_addresses() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """(device, address/prefix) of every IPv4 address of the host, on any interface."""
    found = []
    for line in run_ip("addr", "show").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "inet":
            found.append((parts[1], ipaddress.IPv4Interface(parts[3])))
    return found


def lan_subnets() -> list[str]:
    """The IPv4 subnets of the interfaces that carry a default route: the network the host sits
    on, which a sandbox must not reach even when its addresses are public. The routes and the
    addresses are read at once (two `ip` processes; every start's egress check waits for them)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ip-addr") as reading:
        addresses = reading.submit(_interface_addresses)
        routes = run_ip("route", "show", "default")
    devices = set()
    for line in routes.splitlines():
        parts = line.split()
        if "dev" in parts:
            devices.add(parts[parts.index("dev") + 1])
    found = set()
    for device, address in addresses.result():
        if device in devices and not any(address.network.subnet_of(ipaddress.IPv4Network(r)) for r in BLOCKED_RANGES):
            found.add(str(address.network))
    return sorted(found)


def host_addresses() -> list[str]:
    """Every IPv4 address of the host's own, on any interface (a VPN's, a test's): traffic to
    them goes to the host (INPUT), which refuses sandboxes whatever their list grants."""
    return sorted({str(address.ip) for _, address in _interface_addresses()})


def dropped_ranges() -> list[str]:
    return [*BLOCKED_RANGES, *lan_subnets()]
