"""What the network tests share: "the internet", the host's own listener, a sandbox's view of them.

"The internet" is a network namespace on a veth pair in 198.18.0.0/15 with a listener inside:
sandboxes reach it through the host's routing and Docker's NAT, as they would the real internet.
The host's own addresses are stood for by the veth's host side and the bridge gateway, each with
a listener of the test's own. No traffic leaves this machine.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from django.conf import settings

from sandboxes import engine, network, services
from sandboxes.models import Sandbox
from tests.support.docker import docker_cli
from tests.support.waiting import wait_for

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


PROXY_NAMES = ["bound.example.test", "other.example.test", "ruled.example.test"]


@pytest.fixture
def credential_proxy(upstream_dns, tmp_path, settings) -> Iterator[dict]:
    """The panel's credential proxy running on the bridges' gateways (as `manage.py
    credential_proxy` runs it), sandboxes pointed at it (SANDBOX_PROXY), and a stand-in HTTPS
    service on 443 in the namespace (standin.py; its CA trusted by the proxy) answering
    PROXY_NAMES (and unlisted.example.test) through the namespace's name server."""
    from sandboxes.network import proxy
    from tests.sandboxes.network import standin

    inet, ns = upstream_dns["internet"], f"ccp-inet{100 + _slot()}"
    upstream_dns["names"].write_text(json.dumps(dict.fromkeys([*PROXY_NAMES, "unlisted.example.test"], inet)))
    certs = standin.make_certificates(tmp_path, PROXY_NAMES)
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", standin.SERVER, inet, "443", str(certs["cert"]), str(certs["key"])]
    )
    settings.SANDBOX_PROXY = True
    settings.SANDBOX_PROXY_UPSTREAM_CA = str(certs["ca"])
    docker = engine.engine_for()
    for bridge in network.bridges_table():
        network.ensure_network_of(docker, bridge.mode)
    running = proxy.start_thread()
    try:
        wait_for(lambda: f"{inet}:443" in subprocess.run(["ip", "netns", "exec", ns, "ss", "-lnt"], capture_output=True, text=True).stdout,
                 timeout=10, what="the stand-in listening")  # fmt: skip
        yield {"internet": inet, "certs": certs, "proxy": running}
    finally:
        running.stop()
        server.kill()
        server.wait()


def lookup(sandbox: Sandbox, name: str, server: str = "") -> str:
    """busybox nslookup's output from inside the sandbox (its own resolver unless `server`)."""
    done = docker_cli("exec", sandbox.container_id, "sh", "-c", f"timeout 5 nslookup {name} {server}", check=False)
    return done.stdout + done.stderr


def allow_gateway() -> str:
    return network.allow_gateway()


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


UPSTREAM = "127.0.0.77"  # the resolver's upstream in the tests below: a name server on loopback


@contextmanager
def udp_server(address: str, answer: Callable[[bytes], bytes]) -> Iterator[None]:
    """A name server on `address`:53 (loopback) answering each packet with `answer(packet)`,
    in a thread, for as long as the block runs."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((address, 53))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                data, peer = srv.recvfrom(4096)
            except OSError:
                continue
            srv.sendto(answer(data), peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        srv.close()


@pytest.fixture
def loopback_upstream(settings) -> Iterator[list[bytes]]:
    """A name server on 127.0.0.77:53 that keeps every packet it gets: `big.example.test` has
    one address with a TTL of 2^31-1, `many.example.test` 300 addresses."""
    from dnslib import QTYPE, RR, A, DNSRecord

    received: list[bytes] = []

    def answer(data: bytes) -> bytes:
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
        return r.pack()

    with udp_server(UPSTREAM, answer):
        settings.SANDBOX_DNS_UPSTREAM = [UPSTREAM]
        yield received
