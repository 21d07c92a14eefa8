"""The credential proxy: keys the agent never holds, and HTTP rules for listed hosts.

Sandboxes in internet and allowlist mode are pointed at it (HTTPS_PROXY..., proxy_ca.environment);
it listens on each bridge's gateway (`manage.py credential_proxy`, its own Procfile line, on every
host beside the resolver) and is built on mitmproxy, in one asyncio process. The host's rules let
a sandbox reach that port of the gateway and nothing else of the host. For each connection it
finds the asking sandbox by its address (as the resolver does; read again at most every REFRESH
seconds) and then:

- a CONNECT (or a plain-HTTP request) is judged by the sandbox's egress mode: allowlist mode, only
  listed names (and CIDRs) on their ports; internet mode, anything whose address is not in a
  blocked range, the host's LAN or the host itself (the name resolved here, and the connection
  made to the address that was judged); unknown clients and `none` mode get nothing;
- a host bound by one of the sandbox's proxy secrets, or listed with HTTP rules, is intercepted:
  TLS ends here with a certificate of the panel's CA (which the sandbox trusts), the secret's
  header gets the real value (only there, only over TLS), a request the rules forbid gets 403;
- every other CONNECT is passed through untouched (mitmproxy's ignore_connection): the sandbox
  sees the host's own certificate, and the proxy sees nothing of what is inside.

Every decision goes into the decision log (EgressDenial, kind "proxy" or "http", allowed or
not): alike decisions within a second fold into one row with a count, written by a thread every
half second and paid from the decision budget. A secret's value is written nowhere: a row names
the secret, never what it holds.
"""

import asyncio
import ipaddress
import logging
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from django.utils.crypto import salted_hmac
from dnslib import QTYPE, DNSRecord

from ..models import DecisionKind, EgressDenial
from . import allowlist, decision_budget, host, proxy_ca, resolver
from .bridges import table
from .commands import EgressError

log = logging.getLogger(__name__)
REFRESH = 0.5  # seconds between two readings of who is who (a changed list or secret in force within a second)
RANGES_REFRESH = 30.0  # the host's own addresses and LAN
NAME_TTL_MAX = 60.0
MAX_CONNECTIONS = 256  # open at once from one address (a sandbox): more are cut, so no sandbox holds them all
STREAM_ABOVE = "1m"  # a larger body (up or down) is streamed through, never held whole in memory
PROBE_SUFFIX = "proxy-probe.ccpanel.invalid"
# Headers by which many frameworks take a request for another method: judged as its method too.
OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")


@dataclass
class Client:
    sandbox_id: int
    mode: str
    entries: list[allowlist.Entry] | None  # allowlist mode's; None in internet mode
    bindings: list = field(default_factory=list)  # sandboxes.secrets.Binding, with values

    def bound(self, host: str) -> list:
        return [b for b in self.bindings if b.binds(host)]

    def ruled(self, host: str) -> bool:
        return any(e.ruled and e.matches(host) for e in self.entries or [])


def read_clients() -> dict[str, Client]:
    from .. import secrets as vault_secrets
    from ..services.allowlist import proxy_clients

    found = proxy_clients()
    bindings = vault_secrets.proxy_secrets_for({pk: team for pk, team, _, _ in found.values()})
    return {a: Client(pk, mode, entries, bindings.get(pk, [])) for a, (pk, _, mode, entries) in found.items()}


class Directory:
    """Client address -> Client, read at most every REFRESH seconds (in a worker thread, so the
    event loop never waits on the database); an unknown address on a sandbox bridge (a sandbox
    started since) has it read again sooner, at most every MISS_REFRESH seconds."""

    MISS_REFRESH = 0.1

    def __init__(self):
        self.clients: dict[str, Client] = {}
        self.read_at = -REFRESH
        self.lock = asyncio.Lock()

    async def lookup(self, address: str) -> Client | None:
        found = self.clients.get(address)
        age = time.monotonic() - self.read_at
        if age > REFRESH or (found is None and age > self.MISS_REFRESH and _from_a_sandbox(address)):
            async with self.lock:
                if time.monotonic() - self.read_at > min(age, REFRESH):  # nobody read it meanwhile
                    self.clients = await asyncio.to_thread(self._read)
                    self.read_at = time.monotonic()
            found = self.clients.get(address)
        return found

    @staticmethod
    def _read() -> dict[str, Client]:
        close_old_connections()
        try:
            return read_clients()
        except Exception:  # Docker or the database away: nobody is known, nothing goes through
            log.exception("the credential proxy could not read its clients")
            return {}


class Decisions:
    """Decisions into the decision log: counted in memory, alike ones within a second folded into
    one row, written every half second by a thread of its own (paid from the decision budget)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending: dict[tuple, list] = {}

    def record(self, sandbox_id: int, kind: str, allowed: bool, *, name: str = "", destination: str | None = None,
               port: int | None = None, protocol: str = "https", method: str = "", path: str = "", reason: str = "") -> None:  # fmt: skip
        key = (sandbox_id, kind, allowed, name[:253], destination, port, protocol, method[:10], path.split("?", 1)[0][:500], reason[:200])
        with self.lock:
            entry = self.pending.get(key)
            if entry is None:
                self.pending[key] = [timezone.now(), 1]
            else:
                entry[1] += 1

    def flush(self) -> int:
        with self.lock:
            pending, self.pending = self.pending, {}
        if not pending:
            return 0
        budget = decision_budget.budget()
        rows = [
            EgressDenial(
                sandbox_id=k[0],
                kind=k[1],
                allowed=k[2],
                name=k[3],
                destination=k[4],
                port=k[5],
                protocol=k[6],
                method=k[7],
                path=k[8],
                reason=k[9],
                at=v[0],
                count=v[1],
            )  # fmt: skip
            for k, v in pending.items()
            if budget.take(k[0], v[1])
        ]
        try:
            EgressDenial.objects.bulk_create(rows)
        except Exception:
            log.exception("could not write %d decisions of the credential proxy", len(rows))
            return 0
        if budget.pending():
            budget.flush()
        return len(rows)

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            close_old_connections()
            self.flush()
        self.flush()


class Ranges:
    """Where no sandbox goes, whatever its list says: the blocked ranges, the host's LAN and the
    host's own addresses (read again every RANGES_REFRESH seconds)."""

    def __init__(self):
        self.networks: list[ipaddress.IPv4Network] = []
        self.read_at = -RANGES_REFRESH

    def refused(self, address: str) -> bool:
        if time.monotonic() - self.read_at > RANGES_REFRESH:
            try:
                names = [*host.dropped_ranges(), *(f"{a}/32" for a in host.host_addresses())]
            except (OSError, EgressError):  # fail closed: only the fixed ranges, and the bridges' gateways
                names = [*host.BLOCKED_RANGES]
            self.networks = [ipaddress.IPv4Network(n, strict=False) for n in names]
            self.networks += [ipaddress.IPv4Network(f"{b.gateway}/32") for b in table()]
            self.read_at = time.monotonic()
        ip = ipaddress.ip_address(address)
        return ip.version != 4 or any(ip in n for n in self.networks)


class Names:
    """Names resolved for the proxy, from the servers the resolver asks, kept for their TTL. On
    threads of their own (never those that read who is who), at most LOOKUPS_EACH at once for one
    sandbox: a sandbox asking for names whose servers never answer (each a few seconds) waits on
    its own lookups and holds up no other sandbox's."""

    LOOKUPS_EACH = 4
    THREADS = 16

    def __init__(self):
        self.kept: dict[tuple[str, bool], tuple[list[str], float]] = {}
        self.pool = ThreadPoolExecutor(self.THREADS, thread_name_prefix="proxy-names")
        self.asking: dict[int, asyncio.Semaphore] = {}

    async def addresses(self, name: str, *, plain: bool, asker: int = 0) -> list[str]:
        try:
            return [str(ipaddress.IPv4Address(name))]
        except ValueError:
            pass
        key = (name, plain)
        found, until = self.kept.get(key, ([], 0.0))
        if until > time.monotonic():
            return found
        async with self.asking.setdefault(asker, asyncio.Semaphore(self.LOOKUPS_EACH)):
            found, ttl = await asyncio.get_running_loop().run_in_executor(self.pool, self._ask, name, plain)
        if len(self.kept) > 10000:
            self.kept.clear()
        self.kept[key] = (found, time.monotonic() + min(max(ttl, 1), NAME_TTL_MAX))
        return found

    @staticmethod
    def _ask(name: str, plain: bool) -> tuple[list[str], int]:
        query = DNSRecord.question(name, "A")
        query.header.id = secrets.randbelow(65536)
        answer = resolver.forward(query, tcp=False, servers=resolver.plain_upstreams() if plain else resolver.upstreams())
        records = [rr for rr in (answer.rr if answer else []) if rr.rtype == QTYPE.A]
        return [str(rr.rdata) for rr in records], min((rr.ttl for rr in records), default=5)


@dataclass
class Tunnel:
    client: Client
    host: str
    port: int
    address: str  # the one judged: every connection for the tunnel goes there
    intercept: bool


def refusal(flow, text: str) -> None:
    from mitmproxy import http

    if flow.request.stream or "chunked" in flow.request.headers.get("transfer-encoding", "").lower():
        # a large (or unknown) body on its way: no answer without reading it all, the connection is cut
        flow.kill()
        return
    flow.response = http.Response.make(403, f"ccpanel proxy: {text}\n".encode(), {"content-type": "text/plain; charset=utf-8"})


class CredentialProxy:
    """The mitmproxy addon: judges each CONNECT and request, intercepts only bound or ruled hosts,
    and injects the bound secrets."""

    def __init__(self, decisions: Decisions | None = None):
        self.directory = Directory()
        self.decisions = decisions or Decisions()
        self.ranges = Ranges()
        self.names = Names()
        self.tunnels: dict[str, Tunnel] = {}  # client connection id -> its CONNECT
        # By client connection: (name, port) -> the address judged, and (address, port) -> the name.
        self.pins: dict[str, dict[tuple[str, int], str]] = {}
        self.named: dict[str, dict[tuple[str, int], str]] = {}
        self.open: dict[str, set[str]] = {}  # client address -> its connections' ids

    async def judge(self, client: Client, name: str, port: int) -> tuple[str | None, str]:
        """(the address to connect to, "") or (None, why not), by the sandbox's mode and list."""
        name = name.rstrip(".").lower()
        if client.entries is not None:
            listed = allowlist.ports_for(name, client.entries) or tuple(
                p for e in client.entries if e.network is not None and _in(name, e.network) for p in e.ports
            )
            if port not in listed:
                return None, "not on the sandbox's list" if not listed else f"port {port} is not listed for {name}"
        addresses = await self.names.addresses(name, plain=client.entries is None, asker=client.sandbox_id)
        allowed = [a for a in addresses if not self.ranges.refused(a)]
        if not allowed:
            return None, "does not resolve" if not addresses else "a blocked address (private, the host or its LAN)"
        return allowed[0], ""

    async def http_connect(self, flow) -> None:
        client = await self.directory.lookup(flow.client_conn.peername[0])
        if client is None:
            refusal(flow, "only the panel's sandboxes may use this proxy.")
            return
        host, port = flow.request.host.rstrip(".").lower(), flow.request.port
        address, why = await self.judge(client, host, port)
        self.decisions.record(client.sandbox_id, DecisionKind.PROXY, address is not None, name=host, destination=address,
                              port=port, method="CONNECT", reason=why)  # fmt: skip
        if address is None:
            refusal(flow, f"CONNECT {host}:{port} refused: {why}.")
            return
        intercept = bool(client.bound(host)) or client.ruled(host)
        self.tunnels[flow.client_conn.id] = Tunnel(client, host, port, address, intercept)
        self.pins.setdefault(flow.client_conn.id, {})[(host, port)] = address

    def tls_clienthello(self, data) -> None:
        tunnel = self.tunnels.get(data.context.client.id)
        if tunnel is None or not tunnel.intercept:
            data.ignore_connection = True  # passed through: the host's own certificate, nothing seen

    def server_connect(self, data) -> None:
        """Every connection goes to an address the proxy judged: a passed-through tunnel's by its
        name (rewritten here), a request's already rewritten (see _send_to), its name as SNI."""
        host, port = data.server.address
        key = (str(host).rstrip(".").lower(), port)
        if (pinned := self.pins.get(data.client.id, {}).get(key)) is not None:
            data.server.address = (pinned, port)
        elif (name := self.named.get(data.client.id, {}).get(key)) is not None:
            data.server.sni = name  # the certificate is checked against the name, not the address
        else:
            data.server.error = "ccpanel proxy: no judged address for this connection"

    def _send_to(self, flow, address: str) -> None:
        """Send the request to the judged address (its Host header kept): connections to it are
        reused from one request to the next."""
        name, header = flow.request.host.rstrip(".").lower(), flow.request.host_header
        self.named.setdefault(flow.client_conn.id, {})[(address, flow.request.port)] = name
        flow.request.host = address
        flow.request.host_header = header

    async def requestheaders(self, flow) -> None:
        """Judged, injected and sent on as soon as its headers are in: a body over STREAM_ABOVE
        goes on as it comes (the proxy never holds a whole upload or download in memory)."""
        if flow.request.method == "CONNECT":
            return
        tunnel = self.tunnels.get(flow.client_conn.id)
        if tunnel is None:
            await self._plain(flow)
            return
        if not await self._still_holds(flow, tunnel):
            return
        host, port = flow.request.host.rstrip(".").lower(), flow.request.port
        if (host, port) != (tunnel.host, tunnel.port) or flow.request.host_header and _host_of(flow.request.host_header) != host:
            refusal(flow, f"a request for {host} inside a tunnel to {tunnel.host}.")
            self._record(tunnel.client, flow, DecisionKind.PROXY, False, "the request's host is not the tunnel's")
            return
        if not self._rules_allow(tunnel.client, flow):
            return
        bound = tunnel.client.bound(host) if _over_tls(flow) else []  # plain HTTP inside a tunnel: never a secret
        for binding in bound:
            flow.request.headers[binding.header] = binding.header_value()
        if bound:
            self._record(tunnel.client, flow, DecisionKind.PROXY, True, "injected " + ", ".join(b.name for b in bound))
        elif tunnel.client.ruled(host):
            self._record(tunnel.client, flow, DecisionKind.HTTP, True, "allowed by the list's HTTP rules")
        self._send_to(flow, tunnel.address)

    async def _still_holds(self, flow, tunnel: Tunnel) -> bool:
        """Each request of a kept-alive tunnel is judged by what is in force now (read again at
        most every REFRESH seconds), not at its CONNECT: a secret disabled, deleted or changed, a
        name taken off the list, the sandbox gone (its address another's) tell on the next request."""
        client = await self.directory.lookup(flow.client_conn.peername[0])
        if client is None or client.sandbox_id != tunnel.client.sandbox_id:
            refusal(flow, "only the panel's sandboxes may use this proxy.")
            return False
        tunnel.client = client
        if (await self.judge(client, tunnel.host, tunnel.port))[0] is None:
            refusal(flow, f"{tunnel.host}:{tunnel.port} is no longer allowed for this sandbox.")
            self._record(client, flow, DecisionKind.PROXY, False, "no longer allowed")
            return False
        return True

    async def _plain(self, flow) -> None:
        """A plain-HTTP request through the proxy: judged like a CONNECT; never injected into
        (a secret never goes in clear text)."""
        if flow.request.host.endswith("." + PROBE_SUFFIX) and not _from_a_sandbox(flow.client_conn.peername[0]):
            from mitmproxy import http

            flow.response = http.Response.make(200, _probe_answer(flow.request.host.split(".", 1)[0]).encode())
            return
        client = await self.directory.lookup(flow.client_conn.peername[0])
        if client is None:
            refusal(flow, "only the panel's sandboxes may use this proxy.")
            return
        host, port = flow.request.host.rstrip(".").lower(), flow.request.port
        address, why = await self.judge(client, host, port)
        self._record(client, flow, DecisionKind.PROXY, address is not None, why, protocol="http", destination=address)
        if address is None:
            refusal(flow, f"{host}:{port} refused: {why}.")
            return
        if self._rules_allow(client, flow):
            self._send_to(flow, address)

    def _rules_allow(self, client: Client, flow) -> bool:
        host, method, path = flow.request.host.rstrip(".").lower(), flow.request.method, flow.request.path.split("?", 1)[0]
        methods = [method, *(v for h in OVERRIDE_HEADERS for v in flow.request.headers.get_all(h))]
        if all(allowlist.http_verdict(host, m.strip(), path, client.entries or []) is not False for m in methods):
            return True
        refusal(flow, f"{method} {path[:200]} on {host} is not allowed by the sandbox's list.")
        self._record(client, flow, DecisionKind.HTTP, False, "forbidden by the list's HTTP rules")
        return False

    def _record(self, client: Client, flow, kind: str, allowed: bool, reason: str, *, protocol: str = "https",
                destination: str | None = None) -> None:  # fmt: skip
        self.decisions.record(client.sandbox_id, kind, allowed, name=flow.request.host, port=flow.request.port, protocol=protocol,
                              destination=destination, method=flow.request.method, path=flow.request.path, reason=reason)  # fmt: skip

    def client_connected(self, client) -> None:
        """At most MAX_CONNECTIONS open at once from one address: the proxy's connections (and the
        memory and descriptors each holds) are shared by every sandbox."""
        mine = self.open.setdefault(client.peername[0], set())
        if len(mine) >= MAX_CONNECTIONS:
            client.error = f"ccpanel proxy: more than {MAX_CONNECTIONS} connections at once from {client.peername[0]}"
            return
        mine.add(client.id)

    def client_disconnected(self, client) -> None:
        mine = self.open.get(client.peername[0], set())
        mine.discard(client.id)
        if not mine:
            self.open.pop(client.peername[0], None)
        self.tunnels.pop(client.id, None)
        self.pins.pop(client.id, None)
        self.named.pop(client.id, None)


def _over_tls(flow) -> bool:
    """Whether the request came over the TLS the proxy ended (and so leaves over TLS): a CONNECT
    tunnel may carry plain HTTP, which a secret never joins (on the wire in clear, and echoed back
    by any page that shows the request)."""
    return flow.request.scheme == "https" and bool(flow.client_conn.tls_established)


def _from_a_sandbox(client: str) -> bool:
    try:
        address = ipaddress.IPv4Address(client)
    except ValueError:
        return False
    return any(address in ipaddress.IPv4Network(b.subnet) for b in table())


def _probe_answer(nonce: str) -> str:
    return salted_hmac("ccpanel.proxy-probe", nonce).hexdigest()


IMPOSTOR = "something other than the panel's credential proxy answers on"


def probe(address: str, port: int | None = None) -> str | None:
    """Whether the panel's own credential proxy answers on `address` (a bridge's gateway): None
    when it does, else why not. A sandbox is pointed there and the host's rules let it reach that
    port: anything else holding it (a squid on every address) would take its traffic anywhere
    from the host, so a proxied sandbox starts only after this (network.gate)."""
    port = port or settings.SANDBOX_PROXY_PORT
    nonce = secrets.token_hex(8)
    request = f"GET http://{nonce}.{PROBE_SUFFIX}/ HTTP/1.1\r\nHost: {nonce}.{PROBE_SUFFIX}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((address, port), timeout=2) as conn:
            conn.sendall(request.encode())
            conn.settimeout(2)
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
                if len(answer) > 65536:
                    break
    except OSError as exc:
        return f"the panel's credential proxy does not answer on {address}:{port} ({exc}); is `manage.py credential_proxy` running?"
    if not answer.endswith(_probe_answer(nonce).encode()) or not answer.startswith(b"HTTP/1.1 200"):
        return f"{IMPOSTOR} {address}:{port}"
    return None


def _in(name: str, network: ipaddress.IPv4Network) -> bool:
    try:
        return ipaddress.IPv4Address(name) in network
    except ValueError:
        return False


def _host_of(header: str) -> str:
    return header.rsplit(":", 1)[0].strip("[]").rstrip(".").lower() if not header.endswith("]") else header.strip("[]").lower()


def configure(master, addresses: list[str], port: int) -> None:
    """The master's options (after its addons registered theirs)."""
    proxy_ca.ensure()  # made once, in mitmproxy's layout, before mitmproxy looks for it
    master.options.update(
        mode=[f"regular@{a}:{port}" for a in addresses],
        confdir=str(proxy_ca.ca_dir()),
        connection_strategy="lazy",  # connect upstream only to the judged address, when needed
        stream_large_bodies=STREAM_ABOVE,
        onboarding=False,  # mitmproxy's own pages (mitm.it): nothing is served but what is judged
    )
    if settings.SANDBOX_PROXY_UPSTREAM_CA:
        master.options.update(ssl_verify_upstream_trusted_ca=settings.SANDBOX_PROXY_UPSTREAM_CA)


async def run(addresses: list[str], port: int, *, started: "threading.Event | None" = None, holder: list | None = None) -> None:
    """Serve on `addresses`:`port` until the master is shut down (holder[0].shutdown())."""
    from mitmproxy.options import Options
    from mitmproxy.tools.dump import DumpMaster

    master = DumpMaster(Options(), with_termlog=False, with_dumper=False)
    decisions = Decisions()
    master.addons.add(CredentialProxy(decisions))
    configure(master, addresses, port)
    stop = threading.Event()
    threading.Thread(target=decisions.run, args=(stop,), name="proxy-decisions", daemon=True).start()
    if holder is not None:
        holder.append(master)
    if started is not None:
        asyncio.get_running_loop().call_later(0.3, started.set)
    try:
        await master.run()
    finally:
        stop.set()
        if server := master.addons.get("proxyserver"):
            await server.servers.update([])  # mitmproxy's `done` leaves them listening


def gateways() -> list[str]:
    return [b.gateway for b in table()]


def start_thread(addresses: list[str] | None = None, port: int | None = None) -> "ProxyThread":
    """The proxy in a thread of this process, with its own event loop (tests, benchmarks)."""
    thread = ProxyThread(addresses or gateways(), port or settings.SANDBOX_PROXY_PORT)
    thread.start()
    thread.started.wait(10)
    return thread


class ProxyThread(threading.Thread):
    def __init__(self, addresses: list[str], port: int):
        super().__init__(name="credential-proxy", daemon=True)
        self.addresses, self.port = addresses, port
        self.started = threading.Event()
        self.holder: list = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(run(self.addresses, self.port, started=self.started, holder=self.holder))
        finally:
            self.loop.close()

    def stop(self) -> None:
        if not self.is_alive():
            return
        if self.loop is not None and self.holder:
            self.loop.call_soon_threadsafe(self.holder[0].shutdown)
        self.join(10)
