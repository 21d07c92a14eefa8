"""Internet and none mode, tried from inside real sandboxes: what a sandbox reaches, live changes,
and the networks the panel refuses to use. See helpers.py for "the internet" the tests stand up.
"""

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.conf import settings

from audit.models import AuditEvent
from sandboxes import network, services
from sandboxes.models import Sandbox
from tests.sandboxes.network.helpers import (
    ACTOR,
    PORT,
    _slot,
    act,
    address_of,
    fetch,
    gateway,
    sh,
)
from tests.support.docker import docker_cli, gvisor_or_skip

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


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


@contextmanager
def _made_by_hand(*options: str) -> Iterator[None]:
    """The internet mode's network, made beforehand by hand (`docker network create` with
    `options`, inter-container traffic off), and removed again at the end."""
    made = network.internet_bridge()
    docker_cli("network", "rm", made.network, check=False)
    docker_cli("network", "create", "-o", "com.docker.network.bridge.enable_icc=false", *options, "--subnet", made.subnet, made.network)
    try:
        yield
    finally:
        docker_cli("network", "rm", made.network, check=False)


def test_an_existing_network_on_another_bridge_is_refused(make_sandbox, clean_docker):
    with _made_by_hand("-o", f"com.docker.network.bridge.name=ccpx{_slot()}"):
        s = make_sandbox("egress-bridge")
        assert s.status == "error" and "another bridge" in s.status_detail


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


def test_a_network_with_ipv6_is_refused(make_sandbox, clean_docker):
    """Found by review: the rules filter IPv4 only, so the bridge may have no IPv6."""
    ipv6 = f"fd00:cc{_slot():02x}::/64"  # one hextet of at most four digits, whatever the slot
    with _made_by_hand("--ipv6", "--subnet", ipv6, "-o", f"com.docker.network.bridge.name={network.internet_bridge().bridge}"):
        s = make_sandbox("egress-v6")
        assert s.status == "error" and "IPv6" in s.status_detail


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
