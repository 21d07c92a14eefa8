"""The host's rules kept in place (sandboxes.network: apply, problems, the watcher, the periodic
check): changes by hand are found and repaired, and sandboxes fail closed meanwhile.
"""

import subprocess
import threading
import time
from datetime import UTC, datetime

import pytest
from django.conf import settings

from audit.models import AuditEvent
from sandboxes import network, services
from sandboxes.models import Sandbox
from tests.sandboxes.network.helpers import PORT, _slot, act, fetch, gateway, restart_dockerd, sh
from tests.support.docker import docker_cli
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


def test_rules_deleted_by_hand_refuse_the_next_start_and_the_periodic_check_repairs_them(
    make_sandbox, clean_docker, internet, host_listener, rules_back
):
    s = make_sandbox("egress-tamper")
    assert fetch(s, gateway(), host_listener) == ""
    # By hand, as an admin (or an attacker with root on the host) would.
    c = network.chains()
    sh("iptables", "-D", "INPUT", "-i", c.bridge, "-j", c.input)
    sh("iptables", "-D", "DOCKER-USER", "-i", c.bridge, "-j", c.forward)
    assert fetch(s, gateway(), host_listener) == "hostonly"  # without them the host is open: they matter
    assert any("jump from INPUT" in p for p in network.problems())

    s = act(s, "stop")
    s = act(s, "start")
    assert s.status == "error"
    assert "egress rules" in s.status_detail and "not in place" in s.status_detail
    assert not docker_cli("ps", "-q", "--filter", f"id={s.container_id}").stdout.strip()
    assert AuditEvent.objects.filter(action="egress.refused_start", target=s.name).exists()

    found = services.egress_repair()
    assert found and network.problems() == []
    event = AuditEvent.objects.filter(action="egress.applied").latest("seq")
    assert any("INPUT" in p for p in event.details["found"])
    s = act(s, "start")
    assert s.status == "running", s.status_detail
    assert fetch(s, gateway(), host_listener) == ""
    assert fetch(s, internet, PORT) == "internet"


@pytest.mark.django_db(transaction=True)
def test_rules_changed_by_hand_are_put_back_by_the_watcher_within_two_seconds(engine_watcher, rules_back):
    """Between two periodic checks (30 s) the host and every ungranted address were open: the
    events watcher notices a change to the panel's chains itself and repairs it at once."""
    c, a = network.chains(), network.allow_chains()
    wait_for(lambda: network.problems() == [], timeout=10, what="the rules in place at the watcher's start")
    for tamper in (
        ("iptables", "-D", "INPUT", "-i", c.bridge, "-j", c.input),  # the host, open
        ("iptables", "-F", a.forward),  # every address, open to allowlist sandboxes
        ("iptables", "-I", "DOCKER-USER", "1", "-i", c.bridge, "-j", "ACCEPT"),  # ours overtaken
    ):
        before = AuditEvent.objects.filter(action="egress.applied").count()
        sh(*tamper)
        assert network.problems(), tamper  # the control: the change is one the check sees
        started = time.monotonic()
        wait_for(lambda: network.problems() == [], timeout=2, interval=0.05, what=f"the repair of {tamper}")
        assert time.monotonic() - started < 2
        wait_for(lambda n=before: AuditEvent.objects.filter(action="egress.applied").count() > n, timeout=2, what="the audit event")
    subprocess.run(["iptables", "-D", "DOCKER-USER", "-i", c.bridge, "-j", "ACCEPT"], capture_output=True)


@pytest.mark.django_db(transaction=True)
def test_a_program_fighting_over_the_rules_gets_a_bounded_number_of_repairs(monkeypatch, rules_back):
    """Something that deletes our jump again and again must not make the watcher repair and
    audit twice a second: after its burst, one repair every REFILL_SECONDS, and the rules are
    back once the fight ends."""
    from sandboxes.network import watch

    monkeypatch.setattr(watch, "BURST", 2)
    monkeypatch.setattr(watch, "REFILL_SECONDS", 2.0)
    c = network.chains()
    network.apply()
    stop = threading.Event()
    watcher = threading.Thread(target=watch.watch, args=(stop,), daemon=True)
    watcher.start()
    before = AuditEvent.objects.filter(action="egress.applied").count()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        subprocess.run(["iptables", "-D", "INPUT", "-i", c.bridge, "-j", c.input], capture_output=True)
        time.sleep(0.25)
    fought = AuditEvent.objects.filter(action="egress.applied").count() - before
    try:
        assert 2 <= fought <= 2 + 8 / 2 + 1, fought  # unbounded, it was one every half second
        wait_for(lambda: network.problems() == [], timeout=3, what="the rules back after the fight")
    finally:
        stop.set()
        watcher.join(5)


def test_a_rule_put_before_ours_is_found_and_moved(make_sandbox, clean_docker, host_listener, rules_back):
    sh("iptables", "-I", "INPUT", "1", "-i", network.chains().bridge, "-j", "ACCEPT")
    try:
        assert any("comes before ours" in p for p in network.problems())
        services.egress_repair()
        assert network.problems() == []
        s = make_sandbox("egress-order")
        assert s.status == "running", s.status_detail
        assert fetch(s, gateway(), host_listener) == ""
    finally:
        subprocess.run(["iptables", "-D", "INPUT", "-i", network.chains().bridge, "-j", "ACCEPT"], capture_output=True)


def test_rules_that_cannot_be_applied_stop_the_sandboxes_on_the_network(make_sandbox, clean_docker, rules_back, monkeypatch):
    s = make_sandbox("egress-fail")
    offline = make_sandbox("egress-offline", network_mode="none")
    assert s.status == offline.status == "running"
    network.remove()

    def refuse(bridge=None):
        raise network.EgressError("iptables-restore: Permission denied (you must be root)")

    monkeypatch.setattr(network, "apply", refuse)  # the one failure this machine cannot make for real
    services.egress_repair()
    s.refresh_from_db()
    offline.refresh_from_db()
    assert s.status == "error" and "could not be applied" in s.status_detail
    assert docker_cli("inspect", "-f", "{{.State.Running}}", s.container_id).stdout.strip() == "false"
    assert offline.status == "running"  # no network: nothing to filter
    assert AuditEvent.objects.filter(action="egress.failed").exists()


def test_the_allowlist_bridge_refuses_all_but_its_grants():
    c = network.chains("ccpunit1")
    rules = network.wanted_allow_rules(c, "172.31.1.1", [*network.BLOCKED_RANGES])
    forward = rules[c.forward]
    assert forward[0] == "-A CCP-F-ccpunit1 -o ccpunit1 -j CCP-D-ccpunit1"  # never another sandbox
    dns = forward.index("-A CCP-F-ccpunit1 -p udp -m udp --dport 53 -j CCP-D-ccpunit1")
    granted = forward.index("-A CCP-F-ccpunit1 -m set ! --match-set CCP-A-ccpunit1 src,dst,dst -j CCP-D-ccpunit1")
    private = forward.index("-A CCP-F-ccpunit1 -d 10.0.0.0/8 -j CCP-D-ccpunit1")
    assert dns < granted < private  # no DNS but the resolver's; a grant never opens a private range
    assert not any("RETURN" in r for r in forward[:-1]) and forward[-1] == "-A CCP-F-ccpunit1 -j RETURN"
    assert rules[c.input][:2] == [
        "-A CCP-I-ccpunit1 -d 172.31.1.1/32 -p udp -m udp --dport 53 -j RETURN",
        "-A CCP-I-ccpunit1 -d 172.31.1.1/32 -p tcp -m tcp --dport 53 -j RETURN",
    ]
    assert network.wanted_allow_nat(c, "172.31.1.1", ["10.9.9.9"]) == [
        "-A CCP-N-ccpunit1 -d 10.9.9.9/32 -p udp -m udp --dport 53 -j DNAT --to-destination 172.31.1.1:53",
        "-A CCP-N-ccpunit1 -d 10.9.9.9/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination 172.31.1.1:53",
    ]
    # After apply(), what iptables and ipset show is exactly this (problems() compares both).
    network.apply()
    assert network.problems() == []
    # A set made by hand with other options is found, and made again by apply().
    a = network.allow_chains()
    sh("iptables", "-F", a.forward)
    sh("ipset", "destroy", a.grants)
    sh("ipset", "create", a.grants, "hash:ip,port,net", "hashsize", "262144", "maxelem", "1024", "timeout", "60", "comment")
    assert any("other options" in p for p in network.problems())
    network.apply()
    assert network.problems() == []


def test_the_command_checks_applies_and_removes(rules_back):
    from io import StringIO

    from django.core.management import CommandError, call_command

    call_command("egress", "remove", stdout=StringIO())
    with pytest.raises(CommandError, match="not in place"):
        call_command("egress", "check", stdout=StringIO())
    out = StringIO()
    call_command("egress", "apply", stdout=out)
    assert "applied" in out.getvalue() and network.problems() == []
    assert AuditEvent.objects.filter(action="egress.applied", target=settings.SANDBOX_BRIDGE).exists()


def test_a_chain_put_before_docker_user_in_forward_is_found_and_moved(make_sandbox, clean_docker, rules_back):
    """Found by review: a VPN daemon's chain first in FORWARD would decide before ours."""
    chain = f"CCP-TEST-{_slot()}"
    subprocess.run(["iptables", "-N", chain], capture_output=True)
    sh("iptables", "-A", chain, "-o", network.chains().bridge, "-j", "ACCEPT")
    sh("iptables", "-I", "FORWARD", "1", "-i", network.chains().bridge, "-j", chain)
    try:
        assert any("first rule of FORWARD" in p for p in network.problems())
        services.egress_repair()
        assert network.problems() == []
        assert subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout.splitlines()[1] == network.FORWARD_JUMP
    finally:
        subprocess.run(["iptables", "-D", "FORWARD", "-i", network.chains().bridge, "-j", chain], capture_output=True)
        subprocess.run(["iptables", "-F", chain], capture_output=True)
        subprocess.run(["iptables", "-X", chain], capture_output=True)


@pytest.mark.django_db(transaction=True)
def test_after_a_dockerd_restart_the_rules_are_back_before_any_sandbox_runs(
    make_sandbox, clean_docker, engine_watcher, internet, rules_back
):
    s = make_sandbox("egress-restart")
    assert s.status == "running" and fetch(s, internet, PORT) == "internet"
    # A reboot empties the firewall: the rules go, and the engine goes down with the machine.
    # (The watcher may put them back before the engine goes: it notices a change in a second.)
    t0 = time.time()
    network.remove()
    restart_dockerd()
    ours = docker_cli("ps", "-q", "--filter", f"label=io.ccpanel.instance={settings.PANEL_INSTANCE}").stdout.split()
    assert ours == []  # no sandbox came back by itself (restart policy "no")
    # The watcher sees the engine back and puts the rules back, before anything starts a sandbox.
    wait_for(lambda: network.problems() == [], timeout=60, what="the rules re-applied by the watcher")
    applied = AuditEvent.objects.filter(action="egress.applied", created_at__gte=datetime.fromtimestamp(t0, tz=UTC))
    assert applied.exists()
    s = wait_for(lambda: (x := Sandbox.objects.get(pk=s.pk)).status != "running" and x, timeout=30, what="the stop noticed")
    s = act(s, "start")
    assert s.status == "running", s.status_detail
    assert fetch(s, internet, PORT) == "internet"
    assert fetch(s, gateway(), 22) == "" and network.problems() == []
