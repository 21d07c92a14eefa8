"""The panel's resolver for `allowlist` sandboxes: the only DNS they get.

It answers on the allowlist bridge's gateway, port 53 (UDP and TCP). The bridge's rules
(sandboxes.network) drop DNS to any other server, except the servers Docker's embedded DNS
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
- a client that is no allowlist sandbox is REFUSED;
- a name listed only with HTTP rules (`github.com GET /myorg/*`) is not granted: it is reached
  only through the credential proxy (sandboxes.network.proxy), which enforces them.

The events watcher runs it (watch_engine), beside the decision log.
"""

import ipaddress
import logging
import re
import secrets
import socket
import socketserver
import struct
import threading
import time

from django.conf import settings
from django.db import connections
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import salted_hmac
from dnslib import OPCODE, QTYPE, RCODE, RR, TXT, DNSError, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from dnslib.label import DNSLabelError

from .. import engine
from ..models import EgressDenial
from . import allowlist, bridges, commands, decision_budget, grant_ledger, host, ipset, nameservers, rules

log = logging.getLogger(__name__)
REFRESH = 0.5
UPSTREAM_TIMEOUT = 3.0
TCP_TIMEOUT = 5.0  # a whole TCP connection
TCP_MAX_MESSAGES = 32
MAX_TTL = 86400  # a longer TTL is taken as a day (ipset's timeouts stop at about 24 days)
MAX_ADDRESSES_AN_ANSWER = 64
LABEL_RE = re.compile(rb"[A-Za-z0-9_-]{1,63}")  # each label as sent: no dot or byte of another kind inside
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # bind before the bridge has its address
BLOCKED = [ipaddress.IPv4Network(r) for r in rules.BLOCKED_RANGES]


class Directory:
    """Client address -> (sandbox pk, entries in force; None for an internet-mode sandbox), read
    at most every REFRESH seconds. Only a grant reads it again (under the grants' lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.clients: dict[str, tuple[int, list[allowlist.Entry] | None]] = {}
        self.read_at = 0.0

    def lookup(self, address: str) -> tuple[int, list[allowlist.Entry] | None] | None:
        from ..services.allowlist import resolver_clients

        with self.lock:
            if time.monotonic() - self.read_at > REFRESH:
                try:
                    self.clients = resolver_clients()
                except Exception:  # Docker or the database away: nobody is known
                    log.exception("the resolver could not read its clients")
                    self.clients = {}
                self.read_at = time.monotonic()
            return self.clients.get(address)


class Denials:
    """Refused names into the decision log: alike refusals within a second fold into one row,
    and past ROWS_A_SECOND new rows a second for one sandbox (a flood of made-up names), the
    rest are counted on its latest row. Every write is also paid for from the panel-wide budget
    (sandboxes.network.decision_budget): past it, refusals are only counted, and summed up later."""

    ROWS_A_SECOND = 20

    def __init__(self):
        self.lock = threading.Lock()
        self.last: dict[tuple[int, str], tuple[int, float]] = {}
        self.window: dict[int, tuple[float, int, int]] = {}  # sandbox -> (second, rows, latest row)

    def record(self, sandbox_id: int, name: str) -> None:
        key, now = (sandbox_id, name), time.monotonic()
        with self.lock:
            seen = self.last.get(key)
            second, rows, latest = self.window.get(sandbox_id, (0.0, 0, 0))
            budget = decision_budget.budget()
            if budget.pending():
                budget.flush()  # the kernel-log reader flushes too; this covers a watcher without it
            if not budget.take(sandbox_id):
                return
            if seen and now - seen[1] < 1.0:
                EgressDenial.objects.filter(pk=seen[0]).update(count=F("count") + 1)
                return
            if now - second < 1.0 and rows >= self.ROWS_A_SECOND:
                EgressDenial.objects.filter(pk=latest).update(count=F("count") + 1)
                return
            row = EgressDenial.objects.create(
                sandbox_id=sandbox_id, at=timezone.now(), name=name[:253], port=53, protocol="dns", kind="dns"
            )
            if len(self.last) > 10000:
                self.last.clear()
            self.last[key] = (row.pk, now)
            self.window[sandbox_id] = (second, rows + 1, row.pk) if now - second < 1.0 else (now, 1, row.pk)


class Budget:
    """At most MAX_GRANTS (address, port) grants to one sandbox at a time (the set is shared by
    every allowlist sandbox: one that resolves endless names of a wildcard it lists must not
    fill it for the others). Kept by the resolver, the only one that grants names."""

    MAX_GRANTS = 4096

    def __init__(self):
        self.lock = threading.Lock()
        self.granted: dict[str, dict[tuple[str, int], float]] = {}  # client -> (address, port) -> until

    def take(self, client: str, grants: set[tuple[str, int]], seconds: int) -> bool:
        now = time.monotonic()
        with self.lock:
            mine = {g: t for g, t in self.granted.get(client, {}).items() if t > now}
            self.granted[client] = mine
            if len(mine.keys() | grants) > self.MAX_GRANTS:
                return False
            mine.update(dict.fromkeys(grants, now + seconds))
            return True


def upstreams() -> list[str]:
    if settings.SANDBOX_DNS_UPSTREAM:
        return list(settings.SANDBOX_DNS_UPSTREAM)
    found = [str(a) for a in nameservers.nameservers(nameservers.RESOLV_CONF) if a.version == 4]
    return found or ["127.0.0.53"]


def plain_upstreams() -> list[str]:
    """For an internet-mode sandbox: the servers Docker would have asked for it (never one on the
    host's loopback, which knows the host's own and local names)."""
    return list(settings.SANDBOX_DNS_UPSTREAM) or nameservers.docker_upstreams()


def forward(query: DNSRecord, *, tcp: bool, servers: list[str] | None = None) -> DNSRecord | None:
    """Ask the upstream servers, one after the other, a query of our own making (the question
    only, a new id): nothing else of what the sandbox sent leaves the host. None when no server
    gives an answer to that question."""
    data = query.pack()
    for server in servers or upstreams():
        try:
            if tcp:
                with socket.create_connection((server, 53), timeout=UPSTREAM_TIMEOUT) as conn:
                    conn.sendall(struct.pack("!H", len(data)) + data)
                    raw = _read_tcp_message(conn, time.monotonic() + UPSTREAM_TIMEOUT)
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as conn:
                    conn.settimeout(UPSTREAM_TIMEOUT)
                    conn.connect((server, 53))  # a datagram from anyone else is not read
                    conn.send(data)
                    raw = conn.recv(65535)
            answer = DNSRecord.parse(raw) if raw else None
        except (OSError, DNSError, ValueError, IndexError):
            continue
        if answer is not None and answer.header.id == query.header.id and answer.q == query.q:
            return answer
    return None


def _read_tcp_message(conn: socket.socket, deadline: float) -> bytes | None:
    head = _read_exact(conn, 2, deadline)
    return _read_exact(conn, struct.unpack("!H", head)[0], deadline) if head else None


def _read_exact(conn: socket.socket, size: int, deadline: float) -> bytes | None:
    chunks, left = [], size
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        conn.settimeout(remaining)
        chunk = conn.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


PROBE_SUFFIX = "probe.ccpanel.invalid"


def _probe_answer(nonce: str) -> str:
    return salted_hmac("ccpanel.resolver-probe", nonce).hexdigest()


def probe(address: str | None = None, port: int = 53) -> str | None:
    """Whether the panel's own resolver answers on the allowlist bridge's gateway (UDP and TCP):
    None when it does, else why not. Anything else there (a dnsmasq on 0.0.0.0:53, say) would
    resolve every name for the sandboxes, so an allowlist sandbox starts only after this."""
    address = address or rules.allow_gateway()
    nonce = secrets.token_hex(8)
    query = DNSRecord.question(f"{nonce}.{PROBE_SUFFIX}", "TXT")
    want = _probe_answer(nonce)
    for tcp in (False, True):
        try:
            if tcp:
                with socket.create_connection((address, port), timeout=2) as conn:
                    data = query.pack()
                    conn.sendall(struct.pack("!H", len(data)) + data)
                    raw = _read_tcp_message(conn, time.monotonic() + 2)
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as conn:
                    conn.settimeout(2)
                    conn.connect((address, port))
                    conn.send(query.pack())
                    raw = conn.recv(4096)
            answer = DNSRecord.parse(raw) if raw else None
        except (OSError, DNSError, ValueError, IndexError) as exc:
            how = "TCP" if tcp else "UDP"
            return f"the panel's resolver does not answer on {address}:{port} ({how}: {exc}); is the events watcher running?"
        texts = [str(rr.rdata).strip('"') for rr in (answer.rr if answer else []) if rr.rtype == QTYPE.TXT]
        if texts != [want]:
            return f"something other than the panel's resolver answers on {address}:{port} ({'TCP' if tcp else 'UDP'})"
    return None


def _from_a_sandbox(client: str) -> bool:
    address = ipaddress.IPv4Address(client)
    return any(address in ipaddress.IPv4Network(b.subnet) for b in bridges.table())


def _writable(name: DNSLabel) -> bool:
    """Whether a name fits in a DNS message (RFC 1035 2.3.4): labels of at most 63 bytes, 253
    bytes in all as dnslib counts them (the dots between labels, no final one)."""
    return len(name) <= 253 and all(len(label) <= 63 for label in name.label)


def _own_query(request: DNSRecord) -> DNSRecord:
    """The question only, with a new id: nothing else of what the sandbox sent leaves the host."""
    return DNSRecord(DNSHeader(id=secrets.randbelow(65536), rd=1), q=DNSQuestion(request.q.qname, request.q.qtype, request.q.qclass))


def _granted(client: str, sandbox_id: int, entries: list[allowlist.Entry], qname: str, addresses: set[str], ttl: int) -> bool:
    """Whether every address is granted to the client, on every port its list gives the name,
    for `ttl` seconds more at least (by any of its names still listed: sandboxes.network.grant_ledger)."""
    need, ports = time.time() + ttl, allowlist.ports_for(qname, entries)
    destinations = sorted(f"{a}/32" for a in addresses)
    try:
        with grant_ledger.opened() as ledger:
            held = ledger.holders_of(client, destinations)
    except commands.EgressError:
        return False
    for element in ((client, port, dst) for dst in destinations for port in ports):
        best = grant_ledger.longest(held.get(element, []), sandbox=sandbox_id, port=element[1], entries=entries)
        if best is None or best.until < need:
            return False
    return True


class Answers:
    """Upstream answers to listed names, kept for their TTL (RFC 2308's for one without records):
    asked again, the resolver neither forwards the question nor grants the addresses again. One
    cache a sandbox, so that none learns from the timing what another asked; at most MAX_KEPT
    answers of at most MAX_BYTES each (past them the oldest goes), for MAX_SANDBOXES sandboxes."""

    MAX_KEPT = 128
    MAX_BYTES = 1232
    MAX_SANDBOXES = 256

    def __init__(self):
        self.lock = threading.Lock()
        self.kept: dict[tuple, dict[tuple, tuple[bytes, float, float]]] = {}  # sandbox -> question -> (answer, at, until)

    def get(self, key: tuple) -> DNSRecord | None:
        """The answer kept for the question, its TTLs counted down; None when none is."""
        now = time.monotonic()
        with self.lock:
            packed, at, until = self.kept.get(key[:2], {}).get(key[2:], (b"", 0.0, 0.0))
        if until <= now:
            return None
        record = DNSRecord.parse(packed)
        for rr in (*record.rr, *record.auth, *record.ar):
            if rr.rtype != QTYPE.OPT:  # its TTL field holds flags, not seconds
                rr.ttl = max(rr.ttl - int(now - at), 0)
        return record

    def put(self, key: tuple, record: DNSRecord) -> None:
        try:
            ttl, packed = _cache_ttl(record), record.pack()
        except (DNSError, DNSLabelError):  # not kept: the relay answers it with SERVFAIL
            return
        if ttl <= 0 or len(packed) > self.MAX_BYTES:
            return
        now = time.monotonic()
        with self.lock:
            mine = {q: kept for q, kept in self.kept.pop(key[:2], {}).items() if kept[2] > now}
            while len(mine) >= self.MAX_KEPT:
                del mine[next(iter(mine))]
            mine[key[2:]] = (packed, now, now + ttl)
            self.kept[key[:2]] = mine  # last: the sandbox that stored an answer least lately goes first
            while len(self.kept) > self.MAX_SANDBOXES:
                del self.kept[next(iter(self.kept))]


def _cache_ttl(record: DNSRecord) -> int:
    """How long an answer may be kept: its records' shortest TTL, or for a name without records
    (NXDOMAIN, or no record of that type) its SOA's negative TTL (RFC 2308 §5); 0: not at all."""
    if record.header.tc or record.header.rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN):
        return 0
    ttls = [rr.ttl for rr in record.rr]
    if not ttls or record.header.rcode == RCODE.NXDOMAIN:
        soa = [rr for rr in record.auth if rr.rtype == QTYPE.SOA]
        ttls += [min(soa[0].ttl, soa[0].rdata.times[-1])] if soa else [0]
    return min(MAX_TTL, *ttls)


class Resolver:
    def __init__(self):
        self.directory = Directory()
        self.denials = Denials()
        self.budget = Budget()
        self.answers = Answers()

    def answer(self, data: bytes, client: str, *, tcp: bool = False) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError):
            return None
        if request.header.qr:  # an answer, not a question: never answered
            return None
        reply = request.reply()
        reply.header.ra = 1
        if request.header.opcode != OPCODE.QUERY:
            reply.header.rcode = RCODE.NOTIMP
            return reply.pack()
        if len(request.questions) != 1:
            reply.header.rcode = RCODE.FORMERR
            return reply.pack()
        labels = request.q.qname.label
        qname = ".".join(label.decode("ascii", "replace") for label in labels).lower()
        if not _writable(request.q.qname):
            return self._malformed(request, client, qname)
        if qname.endswith("." + PROBE_SUFFIX) and not _from_a_sandbox(client):
            reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(_probe_answer(qname.split(".", 1)[0])), ttl=0))
            return reply.pack()
        who = self.directory.lookup(client)
        if who is None:
            reply.header.rcode = RCODE.REFUSED
            return reply.pack()
        sandbox_id, entries = who
        if entries is None:  # an internet-mode sandbox moved there live from allowlist mode
            return self._relay(reply, forward(_own_query(request), tcp=tcp, servers=plain_upstreams()), request)
        entries = allowlist.direct(entries)  # a name with HTTP rules is reached only through the proxy
        well_formed = bool(labels) and all(LABEL_RE.fullmatch(label) for label in labels)
        ports = allowlist.ports_for(qname, entries) if well_formed and len(qname) <= 253 else ()
        if not ports:
            self.denials.record(sandbox_id, qname)
            reply.header.rcode = RCODE.NXDOMAIN
            return reply.pack()
        return self._listed(request, reply, client, (sandbox_id, entries), qname, tcp=tcp)

    def _listed(self, request: DNSRecord, reply: DNSRecord, client: str, who: tuple[int, list], qname: str, *, tcp: bool) -> bytes:
        """A listed name: answered from the cache while the answer's TTL lasts, else asked
        upstream; its addresses granted before the answer is sent (for a cached answer, only
        when its grant lapsed meanwhile: a list changed and changed back, another port)."""
        sandbox_id, entries = who
        key = (client, sandbox_id, qname, request.q.qtype, request.q.qclass, tcp)
        upstream = cached = self.answers.get(key)
        if cached is None:
            upstream = forward(_own_query(request), tcp=tcp)
        if upstream is None:
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        records = [rr for rr in upstream.rr if rr.rtype == QTYPE.A]
        addresses = {str(rr.rdata) for rr in records[:MAX_ADDRESSES_AN_ANSWER]}
        addresses = {a for a in addresses if not any(ipaddress.IPv4Address(a) in net for net in BLOCKED)}
        ttl = min((rr.ttl for rr in records), default=0)
        granted = cached is not None and _granted(client, sandbox_id, entries, qname, addresses, ttl)
        if addresses and not granted and not self._grant(client, sandbox_id, qname, addresses, ttl):
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        # The sandbox is told only the addresses it was granted (at most 64, none it may not reach).
        upstream.rr = [rr for rr in upstream.rr if rr.rtype != QTYPE.A or str(rr.rdata) in addresses]
        if cached is None:
            self.answers.put(key, upstream)
        return self._relay(reply, upstream, request)

    def _malformed(self, request: DNSRecord, client: str, qname: str) -> bytes:
        """FORMERR, without the question: dnslib reads a name no DNS message may carry but cannot
        write it back, and an answer that fails to pack is no answer (the client waits 3 s). An
        allowlist sandbox's try goes into the decision log, as any refused name."""
        who = self.directory.lookup(client)
        if who is not None and who[1] is not None:
            self.denials.record(who[0], qname)
        return DNSRecord(DNSHeader(id=request.header.id, qr=1, rd=request.header.rd, ra=1, rcode=RCODE.FORMERR)).pack()

    def _relay(self, reply: DNSRecord, upstream: DNSRecord | None, request: DNSRecord) -> bytes:
        if upstream is None:
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        upstream.header.id = request.header.id
        upstream.questions = request.questions  # as asked (a cached answer was another's question)
        try:
            return upstream.pack()
        except (DNSError, DNSLabelError):  # an upstream record dnslib reads but cannot write back
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()

    def _grant(self, client: str, sandbox_id: int, qname: str, addresses: set[str], ttl: int) -> bool:
        """Grant the addresses on the ports the sandbox's list gives the name *now*: under the
        grants' lock, with the list and the address's holder read again (a list changed, or an
        address taken over, while the upstream answered grants nothing). An address another
        listed name holds too lasts as long as the longer of the two (sandboxes.network.grant_ledger)."""
        from ..services.allowlist import allowlist_clients

        seconds = max(min(ttl, MAX_TTL) + settings.SANDBOX_ALLOW_MARGIN, settings.SANDBOX_ALLOW_MIN_SECONDS)
        try:
            with ipset.grants_lock(), grant_ledger.opened() as ledger:
                now = allowlist_clients().get(client)
                entries = allowlist.direct(now[1]) if now is not None and now[0] == sandbox_id and now[1] is not None else []
                ports = allowlist.ports_for(qname, entries)
                if not ports:
                    return False
                if not self.budget.take(f"{client}/{sandbox_id}", {(a, p) for a in addresses for p in ports}, seconds):
                    log.warning("%s holds %d grants; %s refused", client, Budget.MAX_GRANTS, qname)
                    return False
                pairs = [(f"{a}/32", port) for a in sorted(addresses) for port in ports]
                mine = grant_ledger.Holder(sandbox_id, qname, time.time() + seconds)
                ledger.hold(client, mine, pairs)
                held = ledger.holders_of(client, sorted({dst for dst, _ in pairs}))
                elements = [(client, port, dst) for dst, port in pairs]
                found = (grant_ledger.grant_for(e, [mine, *held.get(e, [])], sandbox=sandbox_id, entries=entries) for e in elements)
                ipset.grant([g for g in found if g is not None])
        except (commands.EgressError, engine.EngineError, OSError) as exc:  # fail closed: no grant, no answer
            log.error("could not grant %s to %s: %s", qname, client, exc)
            return False
        return True


class _Bounded(socketserver.ThreadingMixIn):
    """At most MAX_HANDLERS questions (or TCP connections) at once, MAX_PER_CLIENT of them from
    one address, MAX_PLAIN from all internet-mode sandboxes together; an address the resolver
    does not answer gets no handler at all. A sandbox that floods it slows only itself."""

    MAX_HANDLERS = 256
    MAX_PER_CLIENT = 8
    MAX_PLAIN = 32
    daemon_threads = True
    resolver: Resolver

    def _take(self, address: str, key: int) -> bool:
        kind = "other"
        if _from_a_sandbox(address):
            who = self.resolver.directory.lookup(address)
            if who is None:
                return False  # REFUSED anyway: not worth a thread
            kind = "plain" if who[1] is None else "allow"
        lock = self.__dict__.setdefault("_lock", threading.Lock())
        with lock:
            busy = self.__dict__.setdefault("_busy", {})
            kinds = self.__dict__.setdefault("_kinds", {})
            if (
                sum(busy.values()) >= self.MAX_HANDLERS
                or busy.get(address, 0) >= self.MAX_PER_CLIENT
                or (kind == "plain" and kinds.get("plain", 0) >= self.MAX_PLAIN)
            ):
                return False
            busy[address] = busy.get(address, 0) + 1
            kinds[kind] = kinds.get(kind, 0) + 1
            self.__dict__.setdefault("_kind_of", {})[key] = kind
            return True

    def _give(self, address: str, key: int) -> None:
        with self.__dict__["_lock"]:
            busy, kinds = self.__dict__["_busy"], self.__dict__["_kinds"]
            kinds[self.__dict__["_kind_of"].pop(key)] -= 1
            busy[address] -= 1
            if not busy[address]:
                del busy[address]

    def process_request(self, request, client_address):
        if not self._take(client_address[0], id(request)):
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._give(client_address[0], id(request))
            connections.close_all()


class _UDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        out = self.server.resolver.answer(data, self.client_address[0])  # type: ignore[attr-defined]
        if out:
            sock.sendto(out, self.client_address)


class _TCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        deadline = time.monotonic() + TCP_TIMEOUT  # the whole connection, however slowly it sends
        try:
            for _ in range(TCP_MAX_MESSAGES):
                data = _read_tcp_message(self.request, deadline)
                if not data:
                    return
                out = self.server.resolver.answer(data, self.client_address[0], tcp=True)  # type: ignore[attr-defined]
                if not out:
                    return
                self.request.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            return


class UDPServer(_Bounded, socketserver.UDPServer):
    allow_reuse_address = False  # a second resolver on the same address is an error, not a twin

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        super().server_bind()


class TCPServer(_Bounded, socketserver.TCPServer):
    allow_reuse_address = True  # TIME_WAIT of an earlier run

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        super().server_bind()


def serve(address: str | None = None, port: int = 53) -> list[socketserver.BaseServer]:
    """Start answering on the allowlist bridge's gateway (UDP and TCP), each in a daemon thread;
    returns the servers (shutdown() stops one)."""
    address = address or rules.allow_gateway()
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
                log.error("the allowlist resolver cannot listen on %s:53 (%s); trying again in 5 s", rules.allow_gateway(), exc)
                stop.wait(5)
                continue
            stop.wait()
            for server in servers:
                server.shutdown()
                server.server_close()

    if host.enforced():
        threading.Thread(target=run, name="allowlist-resolver", daemon=True).start()
    return stop
