"""Where a webhook may be delivered: the rule, judged when a URL is saved and again at every
delivery (a name may resolve elsewhere by then).

A URL is http or https, with a host and no credentials, fragment or control characters. Its host
name is resolved to IPv4 addresses (the egress rules, whose notion of "private" this reuses,
are IPv4: the panel's bridges have no IPv6, so an IPv6 literal or a name with only IPv6
addresses is refused), and every address is judged: one in the ranges no sandbox reaches
(sandboxes.network.BLOCKED_RANGES: loopback, private, link-local and metadata, CGNAT, multicast,
reserved), in the sandboxes' own subnets, on the host's LAN or one of the host's own addresses
makes the URL private. A private
URL is refused unless a superuser set `allow_private` for that webhook (webhooks.services). The delivery then
connects to the very address judged here (webhooks.http), never resolving the name again.
"""

import ipaddress
import socket
import time
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from sandboxes import network


class AddressRefused(Exception):
    """The URL may not be delivered to; the message says why, for the page and the delivery."""


@dataclass(frozen=True)
class Url:
    scheme: str  # http or https
    host: str  # the host name as sent (IDNA, lower case) or an IPv4 literal
    port: int
    path: str  # path and query, at least "/"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Target:
    url: Url
    address: str  # the IPv4 address judged, which the delivery connects to


MAX_URL = 500


def parse(raw: str) -> Url:
    """The URL's parts, or AddressRefused saying what is wrong with it. Any port is allowed: a
    receiver on a public address picks its own; what lies behind a private one is the
    private-address rule's business."""
    text = (raw or "").strip()
    if not text:
        raise AddressRefused("Give the URL to deliver to.")
    if len(text) > MAX_URL:
        raise AddressRefused(f"A URL of at most {MAX_URL} characters.")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp") for c in text):
        raise AddressRefused("The URL may not hold spaces or control characters.")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"Not a URL the panel can read: {exc}.") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise AddressRefused("Only http:// and https:// URLs are delivered to.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise AddressRefused("No user name or password in the URL: the signature is how a receiver knows the panel.")
    if parts.fragment or text.endswith("#"):
        raise AddressRefused("No #fragment in the URL: it is never sent.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise AddressRefused("The URL names no host.")
    if ":" in host or "[" in parts.netloc:
        raise AddressRefused("IPv6 addresses are not delivered to (the panel's egress rules are IPv4).")
    if port == 0:
        raise AddressRefused("Port 0 is not a port.")
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise AddressRefused(f"The host name {host!r} is not a valid domain name.") from exc
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    path = quote(path, safe="/?&=%:@!$'()*+,;~-._")  # sent as ASCII: anything else escaped, escapes kept
    return Url(scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80), path=path)


def resolve(host: str) -> list[str]:
    """The host's IPv4 addresses (an IPv4 literal is itself); AddressRefused when it has none."""
    try:
        return [str(ipaddress.IPv4Address(host))]
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise AddressRefused(f"{host} does not resolve to an IPv4 address ({exc}).") from exc
    addresses = sorted({str(info[4][0]) for info in found})
    if not addresses:
        raise AddressRefused(f"{host} does not resolve to an IPv4 address.")
    return addresses


_HOST_CACHE_SECONDS = 30.0
_host_cache: tuple[float, list[str], list[str]] | None = None


def _host_networks() -> tuple[list[str], list[str]]:
    """The host's LAN subnets and its own addresses (sandboxes.network, read with `ip`), kept
    for a few seconds: a burst of deliveries does not start two processes each."""
    global _host_cache
    now = time.monotonic()
    if _host_cache is None or now - _host_cache[0] > _HOST_CACHE_SECONDS:
        try:
            _host_cache = (now, network.lan_subnets(), network.host_addresses())
        except network.EgressError as exc:  # fail closed: unknown LAN, no private delivery
            raise AddressRefused(f"The host's own addresses could not be read ({exc}), so no address can be judged.") from exc
    return _host_cache[1], _host_cache[2]


def private_reason(address: str) -> str | None:
    """Why the egress rules call `address` private, or None when they do not."""
    ip = ipaddress.IPv4Address(address)
    for blocked in network.BLOCKED_RANGES:
        if ip in ipaddress.IPv4Network(blocked):
            return f"{address} lies in {blocked}, which no sandbox reaches (loopback, private, link-local or reserved)"
    for bridge in (network.internet_bridge(), network.allowlist_bridge()):
        # The sandboxes' own subnets, wherever SANDBOX_SUBNET puts them (198.18.0.0/15, which the
        # egress rules leave open, or a public range): a sandbox's server is no receiver of the
        # panel's (an agent there would read another team's events, or answer as the receiver).
        if ip in ipaddress.IPv4Network(bridge.subnet):
            return f"{address} lies in {bridge.subnet}, the sandboxes' own network"
    lans, own = _host_networks()
    if address in own:
        return f"{address} is one of the host's own addresses"
    for lan in lans:
        if ip in ipaddress.IPv4Network(lan):
            return f"{address} lies in the host's LAN {lan}"
    return None


def target(raw: str, *, allow_private: bool) -> Target:
    """Judge `raw` now: parse it, resolve its host, judge every address; the address to connect
    to. A name with one private address among public ones is refused whole: which one a
    client picks is not the panel's to guess."""
    url = parse(raw)
    addresses = resolve(url.host)
    if not allow_private:
        for address in addresses:
            if why := private_reason(address):
                raise AddressRefused(
                    f"{url.host} is a private address: {why}. The panel's administrators may allow private addresses for this webhook."
                    if url.host != address
                    else f"{why}. The panel's administrators may allow private addresses for this webhook."
                )
    return Target(url=url, address=addresses[0])
