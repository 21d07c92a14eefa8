"""The panel's resolver for `allowlist` sandboxes: the only DNS they get.

It answers on the allowlist bridge's gateway, port 53 (UDP and TCP). The bridge's rules
(sandboxes.egress) drop DNS to any other server, except the servers Docker's embedded DNS
forwards to, whose queries they send here instead. For each question it finds the asking
sandbox by its address on the bridge (sandboxes.services.allowlist_clients, read again at most
every REFRESH seconds, so a changed list is in force within a second):

- a name the sandbox's list does not name gets NXDOMAIN, and the refusal goes into the decision
  log (EgressDenial, protocol "dns");
- a listed name is asked of the upstream servers (SANDBOX_DNS_UPSTREAM, or the host's own), and
  each IPv4 address of the answer is granted to that sandbox on the entry's ports, for the
  answer's TTL plus SANDBOX_ALLOW_MARGIN, *before* the answer is sent: the sandbox can connect as
  soon as it knows the address. A name that moves to a new address is granted the new one at the
  next question, which is why a CDN that rotates its addresses keeps working;
- a client that is no allowlist sandbox is REFUSED.

The events watcher runs it (watch_engine), beside the decision log.
"""

import ipaddress
import logging
import socket
import socketserver
import struct
import threading
import time

from django.conf import settings
from django.db import connections
from django.db.models import F
from django.utils import timezone
from dnslib import QTYPE, RCODE, DNSError, DNSRecord

from . import allowlist, egress
from .models import EgressDenial

log = logging.getLogger(__name__)
REFRESH = 0.5
UPSTREAM_TIMEOUT = 3.0
TCP_TIMEOUT = 10.0
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # bind before the bridge has its address
BLOCKED = [ipaddress.IPv4Network(r) for r in egress.BLOCKED_RANGES]


class Directory:
    """Client address -> (sandbox pk, entries in force), read at most every REFRESH seconds."""

    def __init__(self):
        self.lock = threading.Lock()
        self.clients: dict[str, tuple[int, list[allowlist.Entry]]] = {}
        self.read_at = 0.0

    def lookup(self, address: str) -> tuple[int, list[allowlist.Entry]] | None:
        from .services.allowlist import allowlist_clients

        with self.lock:
            if time.monotonic() - self.read_at > REFRESH:
                try:
                    self.clients = allowlist_clients()
                except Exception:  # noqa: BLE001 - Docker or the database away: nobody is known
                    log.exception("the resolver could not read its clients")
                    self.clients = {}
                self.read_at = time.monotonic()
            return self.clients.get(address)


class Denials:
    """Refused names into the decision log; alike refusals within a second fold into one row."""

    def __init__(self):
        self.lock = threading.Lock()
        self.last: dict[tuple[int, str], tuple[int, float]] = {}

    def record(self, sandbox_id: int, name: str) -> None:
        key, now = (sandbox_id, name), time.monotonic()
        with self.lock:
            seen = self.last.get(key)
            if seen and now - seen[1] < 1.0:
                EgressDenial.objects.filter(pk=seen[0]).update(count=F("count") + 1)
                return
            row = EgressDenial.objects.create(sandbox_id=sandbox_id, at=timezone.now(), name=name[:253], port=53, protocol="dns")
            if len(self.last) > 10000:
                self.last.clear()
            self.last[key] = (row.pk, now)


def upstreams() -> list[str]:
    if settings.SANDBOX_DNS_UPSTREAM:
        return list(settings.SANDBOX_DNS_UPSTREAM)
    found = [str(a) for a in egress._nameservers(egress.RESOLV_CONF) if a.version == 4]
    return found or ["127.0.0.53"]


def forward(data: bytes, *, tcp: bool) -> bytes | None:
    """Ask the upstream servers, one after the other; None when none answers."""
    for server in upstreams():
        try:
            if tcp:
                with socket.create_connection((server, 53), timeout=UPSTREAM_TIMEOUT) as conn:
                    conn.sendall(struct.pack("!H", len(data)) + data)
                    return _read_tcp_message(conn)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as conn:
                conn.settimeout(UPSTREAM_TIMEOUT)
                conn.sendto(data, (server, 53))
                return conn.recv(65535)
        except OSError:
            continue
    return None


def _read_tcp_message(conn: socket.socket) -> bytes | None:
    head = _read_exact(conn, 2)
    return _read_exact(conn, struct.unpack("!H", head)[0]) if head else None


def _read_exact(conn: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = conn.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Resolver:
    def __init__(self):
        self.directory = Directory()
        self.denials = Denials()

    def answer(self, data: bytes, client: str, *, tcp: bool = False) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError):
            return None
        reply = request.reply()
        who = self.directory.lookup(client)
        if who is None:
            reply.header.rcode = RCODE.REFUSED
            return reply.pack()
        if len(request.questions) != 1:
            reply.header.rcode = RCODE.FORMERR
            return reply.pack()
        sandbox_id, entries = who
        qname = str(request.q.qname).rstrip(".").lower()
        ports = allowlist.ports_for(qname, entries) if allowlist.NAME_RE.match(qname) and "*" not in qname else ()
        if not ports:
            self.denials.record(sandbox_id, qname)
            reply.header.rcode = RCODE.NXDOMAIN
            return reply.pack()
        raw = forward(data, tcp=tcp)
        try:
            upstream = DNSRecord.parse(raw) if raw else None
        except (DNSError, ValueError, IndexError):
            upstream = None
        if upstream is None or upstream.header.id != request.header.id:
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        records = [rr for rr in upstream.rr if rr.rtype == QTYPE.A]
        addresses = {str(rr.rdata) for rr in records}
        addresses = {a for a in addresses if not any(ipaddress.IPv4Address(a) in net for net in BLOCKED)}
        if addresses:
            seconds = max(min(rr.ttl for rr in records) + settings.SANDBOX_ALLOW_MARGIN, settings.SANDBOX_ALLOW_MIN_SECONDS)
            try:
                egress.grant([egress.Grant(client, port, f"{a}/32", qname) for a in sorted(addresses) for port in ports], seconds)
            except egress.EgressError as exc:  # fail closed: an address it cannot reach is no answer
                log.error("could not grant %s to %s: %s", qname, client, exc)
                reply.header.rcode = RCODE.SERVFAIL
                return reply.pack()
        return raw


class _UDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        try:
            out = self.server.resolver.answer(data, self.client_address[0])  # type: ignore[attr-defined]
            if out:
                sock.sendto(out, self.client_address)
        finally:
            connections.close_all()


class _TCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(TCP_TIMEOUT)
        try:
            while True:
                data = _read_tcp_message(self.request)
                if not data:
                    return
                out = self.server.resolver.answer(data, self.client_address[0], tcp=True)  # type: ignore[attr-defined]
                if not out:
                    return
                self.request.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            return
        finally:
            connections.close_all()


class UDPServer(socketserver.ThreadingUDPServer):
    allow_reuse_address = False  # a second resolver on the same address is an error, not a twin
    daemon_threads = True
    resolver: Resolver

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        super().server_bind()


class TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # TIME_WAIT of an earlier run
    daemon_threads = True
    resolver: Resolver

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        super().server_bind()


def serve(address: str | None = None, port: int = 53) -> list[socketserver.BaseServer]:
    """Start answering on the allowlist bridge's gateway (UDP and TCP), each in a daemon thread;
    returns the servers (shutdown() stops one)."""
    address = address or egress.allow_gateway()
    resolver = Resolver()
    udp = UDPServer((address, port), _UDPHandler)
    try:
        tcp = TCPServer((address, port), _TCPHandler)
    except OSError:
        udp.server_close()
        raise
    servers: list[socketserver.BaseServer] = [udp, tcp]
    for server in (udp, tcp):
        server.resolver = resolver
        threading.Thread(target=server.serve_forever, name=f"resolver-{type(server).__name__}", daemon=True).start()
    return servers


def start_thread() -> threading.Event:
    """Serve until the returned event is set, binding again every 5 s while the port is taken."""
    stop = threading.Event()

    def run():
        while not stop.is_set():
            try:
                servers = serve()
            except OSError as exc:
                log.error("the allowlist resolver cannot listen on %s:53 (%s); trying again in 5 s", egress.allow_gateway(), exc)
                stop.wait(5)
                continue
            stop.wait()
            for server in servers:
                server.shutdown()
                server.server_close()

    if egress.enforced():
        threading.Thread(target=run, name="allowlist-resolver", daemon=True).start()
    return stop
