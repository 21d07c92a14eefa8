"""Allowlist mode from inside real sandboxes: the panel's resolver grants what is listed, and
nothing else is reached.
"""

import json
import threading
import time

import pytest
from django.conf import settings

from audit.models import AuditEvent
from sandboxes import network, services
from sandboxes.models import Sandbox
from tests.sandboxes.network.helpers import (
    ACTOR,
    PORT,
    Impostor,
    act,
    address_of,
    address_of_on,
    allow_gateway,
    fetch,
    gateway,
    lookup,
)
from tests.support.docker import docker_cli, gvisor_or_skip
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


@pytest.mark.django_db(transaction=True)
def test_allowlist_reaches_only_what_is_listed_through_the_panels_resolver(make_sandbox, clean_docker, upstream_dns, host_listener):
    from sandboxes.models import EgressDenial

    inet = upstream_dns["internet"]
    s = make_sandbox("egress-allow", network_mode="allowlist", egress_allow=f"listed.example.test:{PORT}")
    other = make_sandbox("egress-allow-other")
    assert s.status == "running", s.status_detail
    networks = json.loads(docker_cli("inspect", "-f", "{{json .NetworkSettings.Networks}}", s.container_id).stdout)
    assert sorted(networks) == [settings.SANDBOX_ALLOW_NETWORK]
    # Nothing is reachable until a listed name is resolved: not even the "public" host; the
    # refusal is in the decision log, as on the internet bridge.
    from sandboxes.network import decision_log

    stop, ready = threading.Event(), threading.Event()
    reader = threading.Thread(target=decision_log.follow, args=(stop,), kwargs={"ready": ready}, daemon=True)
    reader.start()
    try:
        assert ready.wait(10), "the kernel's log could not be read"
        assert fetch(s, inet, PORT) == ""
        wait_for(
            lambda: EgressDenial.objects.filter(sandbox=s, destination=inet, port=PORT).exists(), timeout=15, what="the refusal logged"
        )
    finally:
        stop.set()
        reader.join(5)
    # A listed name resolves (through Docker's DNS, sent to the panel's resolver) and connects.
    assert fetch(s, "listed.example.test", PORT) == "internet"
    assert fetch(s, inet, PORT) == "internet"  # the granted address, for its TTL plus the margin
    assert fetch(s, inet, PORT + 1) == ""  # only on the listed port
    grants = [g for g in network.grants() if g.comment == "listed.example.test"]
    assert grants and all(g.destination == f"{inet}/32" and g.port == PORT and g.timeout > 0 for g in grants)
    # An unlisted name gets NXDOMAIN, and the refusal is in the decision log.
    out = lookup(s, "unlisted.example.test")
    assert "NXDOMAIN" in out or "can't resolve" in out, out
    assert EgressDenial.objects.filter(sandbox=s, name="unlisted.example.test", protocol="dns").exists()
    assert "unlisted.example.test" not in upstream_dns["asked"].read_text()  # never asked upstream
    # DNS to any other server is dropped: the internet's own name server never hears it.
    out = lookup(s, "direct-probe.example.test", inet)
    assert "direct-probe" not in upstream_dns["asked"].read_text(), out
    # The host, another sandbox and the gateway's other ports stay out of reach.
    assert fetch(s, allow_gateway(), host_listener) == ""
    assert fetch(s, gateway(), host_listener) == ""
    assert fetch(s, address_of(other), 4444) == ""
    # A name whose address changes stays reachable: the new address is granted when handed out.
    upstream_dns["names"].write_text(json.dumps({"listed.example.test": upstream_dns["moved"], "other.example.test": inet}))
    time.sleep(1.2)  # the upstream's TTL
    assert fetch(s, "listed.example.test", PORT) == "moved"
    # An internet-mode sandbox is never granted anything.
    assert not [g for g in network.grants() if g.source == address_of(other)]
    # Docker's DNS in the sandbox asks the panel's resolver from the sandbox's own namespace
    # (not the host's, where newer Dockers would ask a loopback resolver outside the rules).
    host = json.loads(docker_cli("inspect", "-f", "{{json .HostConfig}}", s.container_id).stdout)
    assert host["Dns"] == [allow_gateway()]
    # A grant added by hand for a listed name but a whole network is taken back by the sync.
    mine = address_of_on(s, settings.SANDBOX_ALLOW_NETWORK)
    network.grant([network.Grant(mine, PORT, "0.0.0.0/1", "listed.example.test")], 1000)
    network.grant([network.Grant(mine, 443, f"{inet}/32", "listed.example.test", proto="udp")], 1000)
    services.sync_grants()
    assert not [g for g in network.grants() if g.destination == "0.0.0.0/1" or g.proto != "tcp"]
    # An internet-mode sandbox that never was in allowlist mode gets nothing from the resolver.
    assert "other.example.test" not in upstream_dns["asked"].read_text()
    out = lookup(other, "other.example.test", allow_gateway())
    assert "Address" not in out.split("other.example.test", 1)[-1] and "other.example.test" not in upstream_dns["asked"].read_text(), out
    # Moved to internet mode live, it still resolves (the panel's resolver answers it plainly).
    services.sandbox_set_network(actor=ACTOR, sandbox=Sandbox.objects.get(pk=s.pk), mode="internet")
    t0 = time.monotonic()
    while fetch(s, "other.example.test", PORT) != "internet":
        assert time.monotonic() - t0 < 1.0, lookup(s, "other.example.test")
    assert not [g for g in network.grants() if g.source == mine]


@pytest.mark.django_db(transaction=True)
def test_allowlist_changes_apply_to_the_running_sandbox_within_a_second(make_sandbox, clean_docker, upstream_dns, rules_back, monkeypatch):
    inet = upstream_dns["internet"]
    s = make_sandbox("egress-allow-live", network_mode="internet")
    assert fetch(s, inet, PORT) == "internet"
    # internet -> allowlist, live: by address nothing; by listed name at once.
    t0 = time.monotonic()
    services.sandbox_set_allowlist(actor=ACTOR, sandbox=s, presets=["github"], allow=f"listed.example.test:{PORT}")
    with monkeypatch.context() as m:  # on a host whose name server is on loopback: not live
        m.setattr(network, "docker_asks_loopback", lambda: True)
        with pytest.raises(services.SandboxError, match="loopback"):
            services.sandbox_set_network(actor=ACTOR, sandbox=Sandbox.objects.get(pk=s.pk), mode="allowlist")
    assert fetch(s, inet, PORT) == "internet" and Sandbox.objects.get(pk=s.pk).network_mode == "internet"
    t0 = time.monotonic()
    services.sandbox_set_network(actor=ACTOR, sandbox=Sandbox.objects.get(pk=s.pk), mode="allowlist")
    while fetch(s, "listed.example.test", PORT) != "internet":  # the name resolved and connected: the change is in force
        assert time.monotonic() - t0 < 1.0, "the listed name not reachable within a second of the change"
    took = [time.monotonic() - t0]
    assert fetch(s, upstream_dns["moved"], PORT) == ""  # and nothing unlisted
    # The name taken off the list: its grants are taken back before the call returns, and the
    # resolver refuses it within a second.
    s = Sandbox.objects.get(pk=s.pk)
    t0 = time.monotonic()
    services.sandbox_set_allowlist(actor=ACTOR, sandbox=s, presets=[], allow="")
    assert not [g for g in network.grants() if g.comment == "listed.example.test"]
    while "NXDOMAIN" not in (out := lookup(s, "listed.example.test")) and "can't resolve" not in out:
        assert time.monotonic() - t0 < 1.0, out
    took.append(time.monotonic() - t0)
    assert fetch(s, inet, PORT) == ""
    print(f"in force after {took[0] * 1000:.0f} ms (mode) and {took[1] * 1000:.0f} ms (list)")
    # A listed CIDR is granted at once, on its ports.
    services.sandbox_set_allowlist(actor=ACTOR, sandbox=Sandbox.objects.get(pk=s.pk), presets=[], allow=f"{inet}/32:{PORT}")
    assert fetch(s, inet, PORT) == "internet"
    # Audited, with what changed.
    actions = list(AuditEvent.objects.filter(target="egress-allow-live").values_list("action", flat=True))
    assert actions.count("sandbox.allowlist_changed") == 3 and "sandbox.network_changed" in actions
    # Stopped: its grants go; started again: its CIDR is granted to its (new) address.
    s = act(Sandbox.objects.get(pk=s.pk), "stop")
    assert not network.grants()
    s = act(s, "start")
    assert s.status == "running" and fetch(s, inet, PORT) == "internet"
    # Fail closed: without the rules, no allowlist sandbox starts.
    network.remove()
    s = act(act(s, "stop"), "start")
    assert s.status == "error" and "not in place" in s.status_detail


@pytest.mark.django_db(transaction=True)
def test_a_gvisor_sandbox_obeys_the_allowlist_too(make_sandbox, clean_docker, upstream_dns, host_listener):
    gvisor_or_skip()
    inet = upstream_dns["internet"]
    s = make_sandbox("egress-allow-gvisor", runtime="runsc", network_mode="allowlist", egress_allow=f"listed.example.test:{PORT}")
    assert s.status == "running", s.status_detail
    assert fetch(s, inet, PORT) == ""
    assert fetch(s, "listed.example.test", PORT) == "internet"
    assert fetch(s, allow_gateway(), host_listener) == ""
    lookup(s, "direct-probe.example.test", inet)
    assert "direct-probe" not in upstream_dns["asked"].read_text()


@pytest.mark.django_db(transaction=True)
def test_an_allowlist_sandbox_starts_only_when_the_panels_own_resolver_answers(make_sandbox, clean_docker):
    impostor = Impostor(allow_gateway())
    try:
        s = make_sandbox("egress-allow-impostor", network_mode="allowlist", egress_allow="listed.example.test")
        assert s.status == "error" and "something other than the panel's resolver" in s.status_detail, s.status_detail
    finally:
        impostor.close()
    s = act(s, "start")  # nothing on the port at all
    assert s.status == "error" and "does not answer" in s.status_detail, s.status_detail
    assert AuditEvent.objects.filter(action="egress.refused_start", target=s.name).count() == 2
    with pytest.raises(services.SandboxError, match="something other than"):
        impostor = Impostor(allow_gateway())
        try:
            other = make_sandbox("egress-allow-impostor2")
            services.sandbox_set_network(actor=ACTOR, sandbox=other, mode="allowlist")
        finally:
            impostor.close()
    assert Sandbox.objects.get(name="egress-allow-impostor2").network_mode == "internet"


@pytest.mark.django_db(transaction=True)
def test_running_allowlist_sandboxes_stop_when_something_else_takes_the_resolvers_port(make_sandbox, clean_docker, upstream_dns):
    s = make_sandbox("egress-allow-taken", network_mode="allowlist", egress_allow=f"listed.example.test:{PORT}")
    assert s.status == "running", s.status_detail
    services.grants_repair()  # the periodic check, with the panel's resolver there: nothing to do
    assert Sandbox.objects.get(pk=s.pk).status == "running"
    for server in upstream_dns["servers"]:  # the watcher dies...
        server.shutdown()
        server.server_close()
    services.grants_repair()  # ...nobody answers: the sandbox resolves nothing new, and runs on
    assert Sandbox.objects.get(pk=s.pk).status == "running"
    impostor = Impostor(allow_gateway())  # ...and something else takes the port
    try:
        services.grants_repair()
    finally:
        impostor.close()
    s = Sandbox.objects.get(pk=s.pk)
    assert s.status == "error" and "something other than the panel's resolver" in s.status_detail
    assert docker_cli("inspect", "-f", "{{.State.Running}}", s.container_id).stdout.strip() == "false"
    assert AuditEvent.objects.filter(action="egress.resolver_impostor").exists()


@pytest.mark.django_db(transaction=True)
def test_without_the_rules_no_allowlist_sandbox_keeps_running(make_sandbox, clean_docker, upstream_dns, settings, rules_back):
    from django.core.management import call_command

    s = make_sandbox("egress-allow-off", network_mode="allowlist", egress_allow=f"listed.example.test:{PORT}")
    assert s.status == "running", s.status_detail
    call_command("egress", "remove")  # by hand: the allowlist bridge would be the open internet
    s = Sandbox.objects.get(pk=s.pk)
    assert s.status == "error" and "removed by hand" in s.status_detail
    assert docker_cli("inspect", "-f", "{{.State.Running}}", s.container_id).stdout.strip() == "false"
    network.apply()
    s = act(s, "start")
    assert s.status == "running", s.status_detail
    settings.SANDBOX_EGRESS_RULES = False  # an admin turns filtering off
    services.grants_repair()  # the periodic check
    s = Sandbox.objects.get(pk=s.pk)
    assert s.status == "error" and "SANDBOX_EGRESS_RULES is off" in s.status_detail
    s = act(s, "start")
    assert s.status == "error" and "needs the host's egress rules" in s.status_detail


@pytest.mark.django_db(transaction=True)
def test_the_resolver_sends_upstream_only_a_question_of_its_own_and_bounds_what_it_grants(
    team, loopback_upstream, monkeypatch, docker_engine, rules_back
):
    """The resolver's own rules, with a client that stands for a sandbox (the directory says
    who asks; the grants go into the real set)."""
    from dnslib import OPCODE, QTYPE, RCODE, RR, TXT, DNSRecord

    from sandboxes.models import EgressDenial
    from sandboxes.network import allowlist, decision_budget, resolver
    from sandboxes.services import allowlist as allowlist_service

    monkeypatch.setattr(decision_budget, "_budget", None)  # a budget of this test's own
    network.apply()
    sandbox = Sandbox.objects.create(name="resolver-unit", team=team, image="x", memory_mb=256, cpus=1, pids_limit=64)
    client = str(next(iter(list(__import__("ipaddress").IPv4Network(settings.SANDBOX_ALLOW_SUBNET).hosts())[200:])))
    entries, _ = allowlist.parse("*.example.test:443,8443")
    monkeypatch.setattr(allowlist_service, "allowlist_clients", lambda: {client: (sandbox.pk, entries)})
    monkeypatch.setattr(allowlist_service, "resolver_clients", lambda: {client: (sandbox.pk, entries)})
    r = resolver.Resolver()

    def ask(record: DNSRecord) -> DNSRecord:
        return DNSRecord.parse(r.answer(record.pack(), client))

    try:
        # Only a QUERY is answered: an UPDATE carrying data never leaves the host.
        update = DNSRecord.question("a.example.test")
        update.header.opcode = OPCODE.UPDATE
        update.add_auth(RR("a.example.test", QTYPE.TXT, rdata=TXT("SECRET-DATA")))
        assert ask(update).header.rcode == RCODE.NOTIMP and loopback_upstream == []
        # A listed name with extra records: upstream gets a fresh question, nothing else.
        q = DNSRecord.question("a.example.test")
        q.add_ar(RR("x.example.test", QTYPE.TXT, rdata=TXT("SECRET-DATA")))
        answer = ask(q)
        assert answer.header.rcode == RCODE.NOERROR and answer.header.id == q.header.id and str(answer.rr[0].rdata) == "198.18.77.2"
        sent = DNSRecord.parse(loopback_upstream[-1])
        assert b"SECRET" not in loopback_upstream[-1] and not sent.ar and not sent.auth and sent.header.id != q.header.id
        mine = sorted((g.port, g.destination) for g in network.grants() if g.source == client)
        assert mine == [(443, "198.18.77.2/32"), (8443, "198.18.77.2/32")]
        # A TTL past what ipset takes is taken as a day.
        assert ask(DNSRecord.question("big.example.test")).header.rcode == RCODE.NOERROR
        big = [g for g in network.grants() if g.comment == "big.example.test"]
        assert big and all(0 < g.timeout <= 86400 + settings.SANDBOX_ALLOW_MARGIN for g in big)
        # At most 64 addresses of one answer are granted; past the budget, nothing more.
        many = ask(DNSRecord.question("many.example.test"))
        assert len({g.destination for g in network.grants() if g.comment == "many.example.test"}) == 64
        assert len([rr for rr in many.rr if rr.rtype == QTYPE.A]) == 64  # it is told only what it may reach
        monkeypatch.setattr(resolver.Budget, "MAX_GRANTS", 131)  # it holds 132 (address, port) grants now
        assert ask(DNSRecord.question("more.example.test")).header.rcode == RCODE.SERVFAIL
        # A label with a dot inside is not the name it prints as.
        dotted = DNSRecord.question("a.example.test")
        dotted.q.qname.label = (b"evil.a", b"example", b"test")
        assert ask(dotted).header.rcode == RCODE.NXDOMAIN
        # Unlisted names: NXDOMAIN, never asked upstream, and a flood fills no table.
        before = len(loopback_upstream)
        for i in range(300):
            assert ask(DNSRecord.question(f"n{i}.elsewhere.test")).header.rcode == RCODE.NXDOMAIN
        assert len(loopback_upstream) == before
        rows = EgressDenial.objects.filter(sandbox=sandbox, protocol="dns").exclude(name="evil.a.example.test")
        # What the panel-wide budget turned away is counted, not lost (sandboxes.network.decision_budget).
        unlogged = EgressDenial.objects.filter(sandbox=sandbox, protocol="unlogged").values_list("count", flat=True)
        counted = sum(rows.values_list("count", flat=True)) + sum(unlogged) + decision_budget.budget().pending()
        assert rows.count() <= 3 * resolver.Denials.ROWS_A_SECOND and counted == 300
    finally:
        network.revoke([g for g in network.grants() if g.source == client])
