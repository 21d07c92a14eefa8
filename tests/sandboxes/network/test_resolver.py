"""The panel's resolver (sandboxes.network.resolver) on its own: a client address stands for an
allowlist sandbox (the directory is told who it is), a name server on loopback stands for the
upstream, and the grants go into the real ipset of this test slot's allowlist bridge.
"""

import ipaddress
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.conf import settings
from dnslib import QTYPE, RCODE, RR, SOA, A, DNSRecord

from sandboxes import network, services
from sandboxes.models import EgressDenial, Sandbox
from sandboxes.network import allowlist, decision_budget, resolver
from sandboxes.services import allowlist as allowlist_service
from tests.sandboxes.network.helpers import _slot, udp_server

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


@dataclass
class Upstream:
    """A name server on 127.0.<100+slot>.77:53: `names` maps a name to (address, TTL) for its A
    record; any other type of a known name gets no record and an SOA (negative TTL 60); every
    question it gets is kept in `asked`."""

    address: str
    names: dict[str, tuple[str, int]] = field(default_factory=dict)
    asked: list[DNSRecord] = field(default_factory=list)

    def reply(self, q: DNSRecord) -> DNSRecord:
        r = q.reply()
        name = str(q.q.qname).rstrip(".")
        if name not in self.names:
            r.header.rcode = RCODE.NXDOMAIN
        elif q.q.qtype == QTYPE.A:
            r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(self.names[name][0]), ttl=self.names[name][1]))
        else:
            r.add_auth(RR("example.test", QTYPE.SOA, rdata=SOA("ns.example.test", "admin.example.test", (1, 60, 60, 60, 60)), ttl=600))
        return r

    @staticmethod
    def broken(query: bytes) -> bytes:
        """An answer whose record's owner has a 64-byte label: dnslib reads it, cannot write it."""
        owner = bytes([64]) + b"c" * 64 + b"\0"
        record = owner + struct.pack("!HHIH", QTYPE.A, 1, 60, 4) + bytes([198, 18, 77, 9])
        return struct.pack("!6H", struct.unpack("!H", query[:2])[0], 0x8180, 1, 1, 0, 0) + query[12:] + record


@pytest.fixture
def upstream(settings) -> Iterator[Upstream]:
    up = Upstream(f"127.0.{100 + _slot()}.77")

    def answer(data: bytes) -> bytes:
        q = DNSRecord.parse(data)
        up.asked.append(q)
        return up.broken(data) if str(q.q.qname) == "broken.example.test." else up.reply(q).pack()

    with udp_server(up.address, answer):
        settings.SANDBOX_DNS_UPSTREAM = [up.address]
        yield up


class Client:
    """One address on the allowlist bridge, taken for a sandbox whose list the test sets."""

    def __init__(self, sandbox: Sandbox, monkeypatch):
        self.sandbox, self.monkeypatch = sandbox, monkeypatch
        self.address = str(list(ipaddress.IPv4Network(settings.SANDBOX_ALLOW_SUBNET).hosts())[200])
        self.resolver = resolver.Resolver()
        self.listing("")

    def listing(self, text: str, *, plain: bool = False) -> None:
        """The sandbox's list from now on (`plain`: an internet-mode sandbox the resolver answers)."""
        entries = None if plain else allowlist.parse(text)[0]
        mine = {self.address: (self.sandbox.pk, entries)}
        self.monkeypatch.setattr(allowlist_service, "allowlist_clients", lambda: {} if plain else mine)
        self.monkeypatch.setattr(allowlist_service, "resolver_clients", lambda: mine)
        self.resolver.directory.read_at = 0.0  # read again at the next question, as within REFRESH

    def ask(self, name: str, qtype: str = "A") -> DNSRecord:
        return DNSRecord.parse(self.resolver.answer(DNSRecord.question(name, qtype).pack(), self.address))

    def grants(self) -> list[network.Grant]:
        return sorted((g for g in network.grants() if g.source == self.address), key=lambda g: (g.destination, g.port))


@pytest.fixture
def client(team, upstream, monkeypatch, docker_engine) -> Iterator[Client]:
    monkeypatch.setattr(decision_budget, "_budget", None)  # a budget of this test's own
    network.apply()
    sandbox = Sandbox.objects.create(name="resolver-unit", team=team, image="x", memory_mb=256, cpus=1, pids_limit=64)
    c = Client(sandbox, monkeypatch)
    yield c
    c.listing("")
    services.sync_grants()  # nobody listed: every grant of the client (and what it knew of it) goes
    network.revoke(c.grants())


# --- 11: two names that answer with the same address ---------------------------------------------


def test_two_names_on_one_address_each_keep_their_own_expiry_and_listing(client, upstream):
    upstream.names = {"long.example.test": ("198.18.77.3", 3600), "short.example.test": ("198.18.77.3", 1)}
    client.listing("long.example.test short.example.test")
    assert client.ask("long.example.test").header.rcode == RCODE.NOERROR
    assert client.ask("short.example.test").header.rcode == RCODE.NOERROR
    # One element in the set (same address, same port): it lasts as long as the longer answer.
    [g] = client.grants()
    assert g.destination == "198.18.77.3/32" and g.port == 443
    assert g.timeout > 3600, g  # not cut to the short name's TTL + margin
    # The long name taken off the list: the address is the short name's, for its own time only.
    client.listing("short.example.test")
    services.sync_grants()
    [g] = client.grants()
    assert g.comment == "short.example.test" and g.timeout <= 1 + settings.SANDBOX_ALLOW_MARGIN, g
    # Both listed and asked again, the short one last, then the short name taken off: the long
    # one keeps its access.
    client.listing("long.example.test short.example.test")
    client.ask("long.example.test")
    client.ask("short.example.test")
    client.listing("long.example.test")
    services.sync_grants()
    [g] = client.grants()
    assert g.comment == "long.example.test" and g.timeout > 3600, g
    # Neither listed: nothing left.
    client.listing("other.example.test")
    services.sync_grants()
    assert client.grants() == []


def test_a_damaged_ledger_fails_closed_once_then_starts_afresh(client, upstream):
    from sandboxes.network import grant_ledger

    upstream.names = {"api.example.test": ("198.18.77.8", 600)}
    client.listing("api.example.test")
    with open(grant_ledger.path(), "wb") as fh:
        fh.write(b"not a database " * 100)
    assert client.ask("api.example.test").header.rcode == RCODE.SERVFAIL and client.grants() == []
    assert client.ask("api.example.test").header.rcode == RCODE.NOERROR
    assert [g.comment for g in client.grants()] == ["api.example.test"]


# --- 12: a name that cannot be written back into an answer ---------------------------------------


def question(labels: list[bytes], qid: int = 0x4242) -> bytes:
    """A query for a name as raw labels (dnslib would refuse to write a 64-byte one)."""
    name = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    return struct.pack("!6H", qid, 0x0100, 1, 0, 0, 0) + name + struct.pack("!2H", QTYPE.A, 1)


MALFORMED = {
    "a 64-byte label": [b"a" * 64, b"example", b"test"],
    "a name of 300 bytes": [b"b" * 60] * 5,
}


@pytest.mark.parametrize("kind", ["allowlist", "internet", "unknown"])
@pytest.mark.parametrize("what", sorted(MALFORMED))
def test_a_malformed_name_gets_formerr_not_silence(client, upstream, kind, what):
    client.listing("*.example.test", plain=kind == "internet")
    address = "127.0.0.1" if kind == "unknown" else client.address
    out = client.resolver.answer(question(MALFORMED[what]), address)
    assert out, "no answer at all: the client would wait 3 s"
    reply = DNSRecord.parse(out)
    assert reply.header.id == 0x4242 and reply.header.qr and reply.header.rcode == RCODE.FORMERR
    assert upstream.asked == []  # never asked upstream
    if kind == "allowlist":  # a sandbox's try is in the decision log, as any refused name
        first = MALFORMED[what][0].decode()
        assert EgressDenial.objects.filter(sandbox=client.sandbox, protocol="dns", name__startswith=first).exists()


def test_an_upstream_answer_that_cannot_be_written_back_is_servfail(client, upstream):
    client.listing("*.example.test")
    reply = client.ask("broken.example.test")
    assert reply.header.rcode == RCODE.SERVFAIL and len(upstream.asked) == 1


def test_a_malformed_name_is_answered_over_udp_and_tcp(client, upstream):
    address, port = f"127.0.{100 + _slot()}.78", 5300 + _slot()
    servers = resolver.serve(address, port)
    try:
        data = question(MALFORMED["a 64-byte label"])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(1)
            udp.sendto(data, (address, port))
            assert DNSRecord.parse(udp.recv(4096)).header.rcode == RCODE.FORMERR
        with socket.create_connection((address, port), timeout=1) as tcp:
            tcp.sendall(struct.pack("!H", len(data)) + data)
            size = struct.unpack("!H", tcp.recv(2))[0]
            assert DNSRecord.parse(tcp.recv(size)).header.rcode == RCODE.FORMERR
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


# --- 13: answers cached for their TTL --------------------------------------------------------------


def test_a_listed_name_is_asked_upstream_and_granted_once_for_its_ttl(client, upstream):
    upstream.names = {"cached.example.test": ("198.18.77.4", 2)}
    client.listing("cached.example.test")
    first = client.ask("cached.example.test")
    assert [str(rr.rdata) for rr in first.rr] == ["198.18.77.4"] and len(upstream.asked) == 1
    [granted] = client.grants()
    time.sleep(1.05)
    second = client.ask("cached.example.test")
    assert len(upstream.asked) == 1  # from the cache
    assert [str(rr.rdata) for rr in second.rr] == ["198.18.77.4"] and second.rr[0].ttl == 1  # its TTL counts down
    [again] = client.grants()
    assert again.timeout < granted.timeout  # not granted again: the first grant outlives the answer
    time.sleep(1.0)  # the TTL is over: asked again
    assert [str(rr.rdata) for rr in client.ask("cached.example.test").rr] == ["198.18.77.4"]
    assert len(upstream.asked) == 2


def test_a_cached_answer_follows_the_list(client, upstream):
    upstream.names = {"api.example.test": ("198.18.77.5", 600)}
    client.listing("api.example.test")
    client.ask("api.example.test")
    # Taken off the list: NXDOMAIN, cached or not.
    client.listing("other.example.test")
    services.sync_grants()
    assert client.ask("api.example.test").header.rcode == RCODE.NXDOMAIN and client.grants() == []
    # Listed again (its grant was taken back meanwhile): the cached answer is granted again.
    client.listing("api.example.test")
    assert client.ask("api.example.test").header.rcode == RCODE.NOERROR
    assert [(g.destination, g.port) for g in client.grants()] == [("198.18.77.5/32", 443)]
    # Another port for it: granted at the next question, from the cache still.
    client.listing("api.example.test:443,8443")
    client.ask("api.example.test")
    assert [g.port for g in client.grants()] == [443, 8443] and len(upstream.asked) == 1


def test_an_answer_without_records_is_cached_for_its_negative_ttl(client, upstream):
    upstream.names = {"v4only.example.test": ("198.18.77.6", 600)}
    client.listing("v4only.example.test")
    for _ in range(3):
        reply = client.ask("v4only.example.test", "AAAA")
        assert reply.header.rcode == RCODE.NOERROR and not reply.rr
    assert len(upstream.asked) == 1
