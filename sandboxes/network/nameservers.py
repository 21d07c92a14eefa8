"""The host's name servers, as Docker reads them for a container that names none of its own."""

import ipaddress
import os

from .rules import BLOCKED_RANGES

RESOLV_CONF = "/etc/resolv.conf"
# Where Docker reads the upstream servers when resolv.conf names only systemd-resolved's stub.
RESOLVED_CONF = "/run/systemd/resolve/resolv.conf"


def nameservers(path: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read(65536).splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                found.append(ipaddress.ip_address(parts[1]))
            except ValueError:
                continue
    return found


def _docker_servers(path: str, resolved: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The name servers Docker reads for a container that names none: resolv.conf's, or
    systemd-resolved's upstreams when resolv.conf names only its local stub."""
    servers = nameservers(path)
    if servers and all(a.is_loopback for a in servers) and os.path.exists(resolved):
        servers = nameservers(resolved)
    return servers


def host_resolvers(path: str = RESOLV_CONF, resolved: str = RESOLVED_CONF, dropped: list[str] | None = None) -> list[str]:
    """The host's IPv4 name servers that lie in a dropped range: DNS to them (port 53 only)
    stays open. The servers Docker itself forwards to: resolv.conf's, or systemd-resolved's
    upstreams when resolv.conf names only its local stub."""
    servers = _docker_servers(path, resolved)
    nets = [ipaddress.ip_network(r) for r in (dropped if dropped is not None else BLOCKED_RANGES)]
    return sorted({str(a) for a in servers if a.version == 4 and not a.is_loopback and any(a in n for n in nets)})


def docker_upstreams(path: str = RESOLV_CONF, resolved: str = RESOLVED_CONF) -> list[str]:
    """The servers Docker's embedded DNS forwards a container's queries to when the container
    names none of its own: the host's IPv4 name servers (systemd-resolved's upstreams when
    resolv.conf names only its stub), or Google's, Docker's fallback. An allowlist sandbox that
    was moved there live still asks these: the allowlist bridge sends them to the resolver."""
    servers = _docker_servers(path, resolved)
    found = sorted({str(a) for a in servers if a.version == 4 and not a.is_loopback})
    return found or ["8.8.4.4", "8.8.8.8"]


def docker_asks_loopback(path: str = RESOLV_CONF, resolved: str = RESOLVED_CONF) -> bool:
    """Whether Docker's embedded DNS, for a container that names no server of its own, asks a
    loopback server of the host: it does so from the host's namespace, where no rule of ours
    sees it (so such a container is never moved into allowlist mode live)."""
    return any(a.is_loopback for a in _docker_servers(path, resolved))
