"""Egress rules enforced on the host (sandboxes.network), tried from inside real sandboxes.

"The internet" is a network namespace on a veth pair in 198.18.0.0/15 with a listener inside:
sandboxes reach it through the host's routing and Docker's NAT, as they would the real internet.
The host's own addresses are stood for by the veth's host side and the bridge gateway, each with
a listener of the test's own. No traffic leaves this machine.
"""

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from django.conf import settings

from audit.models import AuditEvent
from sandboxes import network, services
from sandboxes.models import Sandbox
from tests.conftest import docker_cli, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db]
ACTOR = services.SystemActor("test")
PORT = 18080

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
while True:
    c, _ = s.accept()
    try:
        c.settimeout(2); c.recv(4096)
        c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 8\\r\\n\\r\\n" + sys.argv[3].encode())
    except OSError:
        pass
    c.close()
"""


def _slot() -> int:
    return int(settings.PANEL_INSTANCE.removeprefix("test") or "0")


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture
def internet() -> Iterator[str]:
    """A namespace standing for the internet: returns its address (198.18.<n>.10, port PORT)."""
    n = 100 + _slot()
    ns, host_if, ns_if = f"ccp-inet{n}", f"ccpvh{n}", f"ccpvn{n}"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", host_if], capture_output=True)
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
    sh("ip", "link", "set", ns_if, "netns", ns)
    sh("ip", "addr", "add", f"198.18.{n}.1/24", "dev", host_if)
    sh("ip", "link", "set", host_if, "up")
    sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"198.18.{n}.10/24", "dev", ns_if)
    sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
    sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
    sh("ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", f"198.18.{n}.1")
    server = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", SERVER, f"198.18.{n}.10", str(PORT), "internet"])
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["ip", "netns", "exec", ns, "ss", "-ltn"], capture_output=True, text=True).stdout.find(f":{PORT}") < 0:
            assert time.monotonic() < deadline, "the listener in the namespace did not start"
            time.sleep(0.05)
        yield f"198.18.{n}.10"
    finally:
        server.kill()
        server.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A service of the host's own, on every one of its addresses (the bridge gateway, the
    veth's host side): a sandbox must reach none of them."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            try:
                c.settimeout(2)
                c.recv(4096)
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nhostonly")
            except OSError:
                pass
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    srv.close()


def fetch(sandbox: Sandbox, address: str, port: int, *, user: str = "") -> str:
    """The body the sandbox gets from address:port (empty when it cannot connect). busybox nc:
    its wget crashes in a root filesystem this bare."""
    args = [
        "exec",
        *(["-u", user] if user else []),
        sandbox.container_id,
        "sh",
        "-c",
        f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {address} {port}",
    ]
    out = docker_cli(*args, check=False).stdout.strip()
    return out.splitlines()[-1].strip() if out else ""


def gateway() -> str:
    """The host's address on the sandboxes' bridge, read from the interface itself."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", settings.SANDBOX_BRIDGE], capture_output=True, text=True).stdout
    address = out.split(" inet ", 1)[1].split("/", 1)[0] if " inet " in out else ""
    assert address, f"no IPv4 address on {settings.SANDBOX_BRIDGE}: {out!r}"
    return address


def address_of(sandbox: Sandbox) -> str:
    return address_of_on(sandbox, settings.SANDBOX_NETWORK)


def address_of_on(sandbox: Sandbox, network: str) -> str:
    networks = json.loads(docker_cli("inspect", "-f", "{{json .NetworkSettings.Networks}}", sandbox.container_id).stdout)
    return networks[network]["IPAddress"]


def act(sandbox: Sandbox, action: str) -> Sandbox:
    services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action=action, enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action=action)
    return Sandbox.objects.get(pk=sandbox.pk)


@pytest.fixture
def rules_back():
    """Whatever a test does to the rules, the next one starts with them in place."""
    apply = network.apply  # the real one, whatever the test put in its place
    yield
    apply()


def test_internet_mode_reaches_the_internet_and_nothing_else(make_sandbox, clean_docker, internet, host_listener):
    a = make_sandbox("egress-a")
    b = make_sandbox("egress-b")
    assert a.status == b.status == "running", (a.status_detail, b.status_detail)
    docker_cli("exec", "-d", b.container_id, "sh", "-c", "while :; do echo sandbox | nc -l -p 18081; done")
    assert fetch(a, internet, PORT) == "internet"
    assert fetch(a, gateway(), host_listener) == ""  # the host, on the bridge's own address
    assert fetch(a, internet.rsplit(".", 1)[0] + ".1", host_listener) == ""  # the host, on another address
    assert address_of(b) and fetch(b, "127.0.0.1", 18081) == "sandbox"  # the control: b's listener answers
    assert fetch(a, address_of(b), 18081) == ""  # another sandbox
    # Root inside, with every capability the policy allows (none), changes nothing.
    assert docker_cli("exec", "-u", "0", a.container_id, "ip", "link", "add", "x0", "type", "dummy", check=False).returncode != 0
    assert fetch(a, gateway(), host_listener, user="0") == ""
    # The control: the host's listener answers this machine itself, so the rules are what stop the sandbox.
    with socket.create_connection((gateway(), host_listener), timeout=2) as c:
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert c.recv(100).endswith(b"hostonly")


def test_none_mode_reaches_nothing(make_sandbox, clean_docker, internet, host_listener):
    s = make_sandbox("egress-none", network_mode="none")
    assert s.status == "running", s.status_detail
    assert fetch(s, internet, PORT) == ""
    assert fetch(s, gateway(), host_listener) == ""


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


def test_an_existing_network_on_another_bridge_is_refused(make_sandbox, clean_docker, settings):
    docker_cli("network", "rm", settings.SANDBOX_NETWORK, check=False)
    other = f"ccpx{_slot()}"
    docker_cli(
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "-o",
        f"com.docker.network.bridge.name={other}",
        "--subnet",
        settings.SANDBOX_SUBNET,
        settings.SANDBOX_NETWORK,
    )
    try:
        s = make_sandbox("egress-bridge")
        assert s.status == "error" and "another bridge" in s.status_detail
    finally:
        docker_cli("network", "rm", settings.SANDBOX_NETWORK, check=False)


def test_the_rules_as_written_are_what_iptables_shows():
    """The comparison is exact: what apply() writes is what problems() reads back."""
    c = network.chains("ccpunit0")
    rules = network.wanted_rules(c, ["10.1.2.3"], [*network.BLOCKED_RANGES, "192.0.2.0/24"])
    assert rules[c.input] == [
        "-A CCP-I-ccpunit0 -m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY -j RETURN",
        "-A CCP-I-ccpunit0 -j CCP-D-ccpunit0",
    ]
    assert rules[c.deny][-1] == "-A CCP-D-ccpunit0 -j DROP" and "-j LOG" in rules[c.deny][0]
    assert not any("ctstate" in r for r in rules[c.forward])  # stateless: no flow outlives a repair
    assert "-A CCP-F-ccpunit0 -d 192.0.2.0/24 -j CCP-D-ccpunit0" in rules[c.forward]
    assert "-A CCP-F-ccpunit0 -d 10.1.2.3/32 -p udp -m udp --dport 53 -j RETURN" in rules[c.forward]
    assert rules[c.forward].index("-A CCP-F-ccpunit0 -o ccpunit0 -j CCP-D-ccpunit0") < rules[c.forward].index(
        "-A CCP-F-ccpunit0 -d 10.1.2.3/32 -p udp -m udp --dport 53 -j RETURN"
    )


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


def test_docker_asks_a_loopback_server_only_where_the_host_has_one(tmp_path):
    conf, resolved = tmp_path / "resolv.conf", tmp_path / "resolved.conf"
    conf.write_text("nameserver 10.1.2.3\n")
    assert not network.docker_asks_loopback(str(conf), str(resolved))
    conf.write_text("nameserver 127.0.0.1\nnameserver 10.1.2.3\n")  # dnsmasq first
    assert network.docker_asks_loopback(str(conf), str(resolved))
    conf.write_text("nameserver 127.0.0.53\n")  # systemd-resolved's stub: Docker reads its upstreams
    resolved.write_text("nameserver 10.9.9.9\n")
    assert not network.docker_asks_loopback(str(conf), str(resolved))
    resolved.unlink()
    assert network.docker_asks_loopback(str(conf), str(resolved))


def test_only_private_resolvers_get_the_dns_hole(tmp_path):
    conf, resolved = tmp_path / "resolv.conf", tmp_path / "resolved.conf"
    servers = ["10.255.255.53", "127.0.0.53", "8.8.8.8", "fd00::1", "bogus"]
    conf.write_text("".join(f"nameserver {s}\n" for s in servers) + "# nameserver 192.168.1.1\n")
    assert network.host_resolvers(str(conf), str(resolved)) == ["10.255.255.53"]  # public: not dropped anyway
    assert network.host_resolvers(str(tmp_path / "missing"), str(resolved)) == []
    # systemd-resolved: resolv.conf names only its stub; Docker forwards to the upstreams.
    conf.write_text("nameserver 127.0.0.53\n")
    resolved.write_text("nameserver 192.168.1.1\nnameserver 9.9.9.9\n")
    assert network.host_resolvers(str(conf), str(resolved)) == ["192.168.1.1"]


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


def test_a_flow_opened_while_the_rules_were_missing_dies_when_they_are_back(make_sandbox, clean_docker, rules_back):
    """Found by review: a connection the rules never saw must not outlive their repair."""
    received = []
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 0))
    srv.listen(4)
    srv.settimeout(10)

    def collect():
        try:
            conn, _ = srv.accept()
            conn.settimeout(1)
            while True:
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    return
                received.append((time.monotonic(), len(data)))
        except OSError:
            return

    s = make_sandbox("egress-flow")
    c = network.chains()
    sh("iptables", "-D", "INPUT", "-i", c.bridge, "-j", c.input)
    t = threading.Thread(target=collect, daemon=True)
    t.start()
    port = srv.getsockname()[1]
    docker_cli("exec", "-d", s.container_id, "sh", "-c", f"while :; do echo tick; sleep 0.1; done | nc {gateway()} {port}")
    deadline = time.monotonic() + 10
    while len(received) < 5:
        assert time.monotonic() < deadline, "the flow never started (the control failed)"
        time.sleep(0.05)
    services.egress_repair()
    repaired = time.monotonic()
    time.sleep(1.5)
    late = [n for at, n in received if at > repaired + 0.3]
    srv.close()
    assert late == [], f"{len(late)} pieces arrived after the repair"


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


def test_a_network_with_ipv6_is_refused(make_sandbox, clean_docker, settings):
    """Found by review: the rules filter IPv4 only, so the bridge may have no IPv6."""
    docker_cli("network", "rm", settings.SANDBOX_NETWORK, check=False)
    docker_cli(
        "network",
        "create",
        "--ipv6",
        "--subnet",
        f"fd00:cc{_slot():02x}::/64",  # one hextet of at most four digits, whatever the slot
        "--subnet",
        settings.SANDBOX_SUBNET,
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "-o",
        f"com.docker.network.bridge.name={settings.SANDBOX_BRIDGE}",
        settings.SANDBOX_NETWORK,
    )
    try:
        s = make_sandbox("egress-v6")
        assert s.status == "error" and "IPv6" in s.status_detail
    finally:
        docker_cli("network", "rm", settings.SANDBOX_NETWORK, check=False)


def test_a_container_attached_to_another_network_by_hand_is_recreated(make_sandbox, clean_docker):
    """Found by review: `docker network connect bridge` would add an unfiltered way out."""
    s = make_sandbox("egress-attach")
    docker_cli("network", "connect", "bridge", s.container_id)
    old = s.container_id
    s = act(act(s, "stop"), "start")
    assert s.status == "running", s.status_detail
    assert s.container_id != old
    networks = json.loads(docker_cli("inspect", "-f", "{{json .NetworkSettings.Networks}}", s.container_id).stdout)
    assert sorted(networks) == [settings.SANDBOX_NETWORK]


@pytest.mark.django_db(transaction=True)
def test_denied_attempts_appear_in_the_decision_log(make_sandbox, clean_docker, host_listener, client, admin_user):
    from sandboxes.models import EgressDenial
    from sandboxes.network import decision_log

    s = make_sandbox("egress-logged")
    other = make_sandbox("egress-other")
    stop, ready = threading.Event(), threading.Event()
    reader = threading.Thread(target=decision_log.follow, args=(stop,), kwargs={"ready": ready}, daemon=True)
    reader.start()
    try:
        assert ready.wait(10), "the kernel's log could not be read"
        assert fetch(s, gateway(), host_listener) == ""  # the host
        assert fetch(s, address_of(other), 4444) == ""  # another sandbox
        wanted = {(gateway(), host_listener), (address_of(other), 4444)}
        deadline = time.monotonic() + 15
        while not {(d.destination, d.port) for d in EgressDenial.objects.filter(sandbox=s)} >= wanted:
            assert time.monotonic() < deadline, list(EgressDenial.objects.values())
            time.sleep(0.2)
    finally:
        stop.set()
        reader.join(5)
    row = EgressDenial.objects.filter(sandbox=s, port=4444).first()
    assert row.protocol == "tcp" and row.count >= 1
    client.force_login(admin_user)
    page = client.get(f"/sandboxes/{s.pk}/refused/").content.decode()
    assert address_of(other) in page and "4444" in page


def gvisor_or_skip() -> None:
    from sandboxes import engine

    if "runsc" not in engine.engine_for().runtimes():
        if os.environ.get("CI") == "true":
            pytest.fail("gVisor is not registered: the CI set-up (scripts/panel.sh) registers it")
        pytest.skip("gVisor (runsc) is not registered with Docker here: make run PANEL_GVISOR=1 sets it up")


def test_a_gvisor_sandbox_obeys_the_same_rules(make_sandbox, clean_docker, internet, host_listener):
    gvisor_or_skip()
    s = make_sandbox("egress-gvisor", runtime="runsc")
    assert s.status == "running", s.status_detail
    host = json.loads(docker_cli("inspect", "-f", "{{json .HostConfig}}", s.container_id).stdout)
    assert host["Runtime"] == "runsc" and host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
    assert docker_cli("exec", s.container_id, "uname", "-r").stdout.strip() != os.uname().release  # gVisor's kernel, not the host's
    assert fetch(s, internet, PORT) == "internet"
    assert fetch(s, gateway(), host_listener) == ""
    assert fetch(s, internet.rsplit(".", 1)[0] + ".1", host_listener) == ""
    assert docker_cli("exec", s.container_id, "id", "-u").stdout.strip() == "1000"


def test_a_network_change_applies_to_the_running_sandbox_within_a_second(make_sandbox, clean_docker, internet, host_listener, rules_back):
    s = make_sandbox("egress-live", network_mode="none")
    assert fetch(s, internet, PORT) == ""
    t0 = time.monotonic()
    services.sandbox_set_network(actor=ACTOR, sandbox=s, mode="internet")
    while fetch(s, internet, PORT) != "internet":
        assert time.monotonic() - t0 < 1.0, "not reachable within a second"
    assert fetch(s, gateway(), host_listener) == ""  # with the same rules as any other
    services.sandbox_set_network(actor=ACTOR, sandbox=s, mode="none")
    assert fetch(s, internet, PORT) == ""
    events = list(
        AuditEvent.objects.filter(action="sandbox.network_changed", target="egress-live").order_by("seq").values_list("details", flat=True)
    )
    assert [(e["from"], e["to"], e["live"]) for e in events] == [("none", "internet", True), ("internet", "none", True)]
    # Fail closed: without the rules, the sandbox is not put on the network.
    network.remove()
    with pytest.raises(services.SandboxError, match="not in place"):
        services.sandbox_set_network(actor=ACTOR, sandbox=Sandbox.objects.get(pk=s.pk), mode="internet")
    assert Sandbox.objects.get(pk=s.pk).network_mode == "none"
    # And it survives a restart: the next start makes the container with the saved mode.
    network.apply()
    s = Sandbox.objects.get(pk=s.pk)
    services.sandbox_set_network(actor=ACTOR, sandbox=s, mode="internet")
    s = act(act(s, "stop"), "start")
    assert s.status == "running" and fetch(s, internet, PORT) == "internet"


# --- allowlist mode -------------------------------------------------------------------------------
# The netns "internet" gets a name server of its own (the upstream the panel's resolver asks):
# it answers A records from a JSON file the test rewrites, with a TTL of 1 s, and writes every
# name it is asked into a log, so a query that reached it directly would show.
DNS_SERVER = """
import json, socket, sys
from dnslib import A, QTYPE, RR, DNSRecord
address, names_file, log_file = sys.argv[1:4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((address, 53))
while True:
    data, peer = s.recvfrom(4096)
    try:
        q = DNSRecord.parse(data)
    except Exception:
        continue
    name = str(q.q.qname).rstrip(".").lower()
    with open(log_file, "a") as fh:
        fh.write(name + "\\n")
    names = json.load(open(names_file))
    r = q.reply()
    if name in names and q.q.qtype == QTYPE.A:
        r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(names[name]), ttl=1))
    elif name not in names:
        r.header.rcode = 3
    s.sendto(r.pack(), peer)
"""


@pytest.fixture
def upstream_dns(internet, tmp_path, settings) -> Iterator[dict]:
    """The internet's name server, a second web server there (198.18.<n>.11, "moved"), and the
    panel's resolver asking that name server, on the allowlist bridge's gateway."""
    import sys

    from sandboxes.network import resolver

    ns = f"ccp-inet{100 + _slot()}"
    net = internet.rsplit(".", 1)[0]
    names, log = tmp_path / "names.json", tmp_path / "asked.log"
    names.write_text(json.dumps({"listed.example.test": internet, "other.example.test": internet}))
    log.write_text("")
    sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{net}.11/24", "dev", f"ccpvn{100 + _slot()}")
    procs = [
        subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", DNS_SERVER, internet, str(names), str(log)]),
        subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", SERVER, f"{net}.11", str(PORT), "moved"]),
    ]
    settings.SANDBOX_DNS_UPSTREAM = [internet]
    servers = resolver.serve()
    try:
        deadline = time.monotonic() + 10
        while not all(
            f"{a}:{p}" in subprocess.run(["ip", "netns", "exec", ns, "ss", "-lntu"], capture_output=True, text=True).stdout
            for a, p in ((internet, 53), (f"{net}.11", PORT))
        ):
            assert time.monotonic() < deadline, "the namespace's servers did not start"
            time.sleep(0.05)
        yield {"names": names, "asked": log, "moved": f"{net}.11", "internet": internet, "servers": servers}
    finally:
        for server in servers:
            if server.socket.fileno() != -1:  # a test may have stopped it already
                server.shutdown()
                server.server_close()
        for p in procs:
            p.kill()
            p.wait()


def lookup(sandbox: Sandbox, name: str, server: str = "") -> str:
    """busybox nslookup's output from inside the sandbox (its own resolver unless `server`)."""
    done = docker_cli("exec", sandbox.container_id, "sh", "-c", f"timeout 5 nslookup {name} {server}", check=False)
    return done.stdout + done.stderr


def allow_gateway() -> str:
    return network.allow_gateway()


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


def test_an_allowlist_is_parsed_and_judged():
    from sandboxes.network import allowlist

    entries, errors = allowlist.parse("api.example.com\n*.example.org:22,443 # git\n198.51.100.0/24:8080\n")
    assert not errors
    assert [(e.text, e.ports) for e in entries] == [("api.example.com", (443,)), ("*.example.org", (22, 443)), ("198.51.100.0/24", (8080,))]
    assert allowlist.ports_for("a.b.example.org.", entries) == (22, 443)
    assert allowlist.ports_for("example.org", entries) == ()  # a wildcard is for subdomains only
    assert allowlist.ports_for("api.example.com", entries) == (443,)
    assert allowlist.ports_for("xapi.example.com", entries) == ()
    for bad, why in [
        ("10.0.0.0/8", "no sandbox reaches"),
        ("169.254.169.254", "no sandbox reaches"),
        ("example.com:53", "port 53"),
        ("example.com:0", "from 1 to"),
        ("exa mple", "a domain"),
        ("*.*.example.com", "a domain"),
        ("ex*ample.com", "a domain"),
        ("0.0.0.0/0", "no sandbox reaches"),
        ('x.com"; rm', "a domain"),
    ]:
        assert any(why in e for e in allowlist.parse(bad)[1]), (bad, allowlist.parse(bad))
    assert allowlist.presets_errors(["claude-code", "nope"]) == ["No preset called 'nope': one of claude-code, github, packages."]
    assert "api.anthropic.com" in [e.text for e in allowlist.effective(["claude-code"], "")]


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


def restart_dockerd() -> None:
    """Stop the Docker engine and start it again as it was started (systemd, or the detached
    `dockerd` that scripts/panel.sh runs), and wait until it answers."""
    from sandboxes import engine

    if os.path.isdir("/run/systemd/system") and subprocess.run(["systemctl", "is-active", "--quiet", "docker"]).returncode == 0:
        sh("systemctl", "restart", "docker")
    else:
        pids = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
        assert len(pids) == 1, f"one dockerd expected, found {pids}"
        with open(f"/proc/{pids[0]}/cmdline", "rb") as fh:
            cmdline = [a.decode() for a in fh.read().split(b"\0") if a]
        os.kill(int(pids[0]), 15)
        deadline = time.monotonic() + 60
        while os.path.exists(f"/proc/{pids[0]}"):
            assert time.monotonic() < deadline, "dockerd did not stop"
            time.sleep(0.2)
        log = open(os.path.join(settings.VAR_DIR, "log", "dockerd.log"), "ab")  # noqa: SIM115 - dockerd keeps it
        subprocess.Popen(cmdline, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            engine.engine_for().ping()
            return
        except engine.EngineError:
            assert time.monotonic() < deadline, "dockerd did not come back"
            time.sleep(0.5)


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


class Impostor:
    """Something other than the panel's resolver on the allowlist gateway's port 53 (a dnsmasq
    on 0.0.0.0:53, say): it answers every question with NXDOMAIN."""

    def __init__(self, address: str):
        from dnslib import DNSRecord

        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
        self.udp.bind((address, 53))
        self.udp.settimeout(0.2)
        self.stop = threading.Event()

        def serve():
            while not self.stop.is_set():
                try:
                    data, peer = self.udp.recvfrom(4096)
                except OSError:
                    continue
                reply = DNSRecord.parse(data).reply()
                reply.header.rcode = 3
                self.udp.sendto(reply.pack(), peer)

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.udp.close()


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


UPSTREAM = "127.0.0.77"  # the resolver's upstream in the tests below: a name server on loopback


@pytest.fixture
def loopback_upstream(settings) -> Iterator[list[bytes]]:
    """A name server on 127.0.0.77:53 that keeps every packet it gets: `big.example.test` has
    one address with a TTL of 2^31-1, `many.example.test` 300 addresses."""
    from dnslib import QTYPE, RR, A, DNSRecord

    received: list[bytes] = []
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((UPSTREAM, 53))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                data, peer = srv.recvfrom(4096)
            except OSError:
                continue
            received.append(data)
            q = DNSRecord.parse(data)
            r = q.reply()
            name = str(q.q.qname).rstrip(".")
            if name == "big.example.test":
                r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("198.18.77.1"), ttl=2**31 - 1))
            elif name == "many.example.test":
                for i in range(300):
                    r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(f"198.18.{78 + i // 250}.{i % 250 + 1}"), ttl=30))
            else:
                r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("198.18.77.2"), ttl=30))
            srv.sendto(r.pack(), peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    settings.SANDBOX_DNS_UPSTREAM = [UPSTREAM]
    yield received
    stop.set()
    t.join()
    srv.close()


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
