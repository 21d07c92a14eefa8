"""The cost of the host's egress rules (sandboxes.network), in one run.

- Throughput: a sandbox downloads from "the internet" (a network namespace on a veth pair in
  198.18.0.0/15, as the tests use) through Docker's NAT, with the rules in place and with them
  removed, runs interleaved; the ratio of the medians (target >= 0.95). Timed by the server in
  the namespace, from accept to the last byte sent and the client gone.
- apply_20_ms: with 20 sandboxes running on the network, the time to apply a change of the rules
  (network.apply: every chain replaced in one iptables-restore, jumps checked) and to verify them.
- allowlist_connect_ms: what allowlist mode adds to a connection, DNS included: a sandbox in
  allowlist mode connects by name (Docker's DNS -> the panel's resolver -> the namespace's name
  server, the grant written, then the TCP connect) against one in internet mode connecting by
  address, each a loop of connections inside the container (so `docker exec` is paid once), the
  difference of the medians per connection.

Usage: .venv/bin/python bench/egress.py [--runs N] [--mb M]   (needs root, Docker; `make bench`)
Traffic goes only to the namespace this script makes. The last line is a JSON object.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from _setup import VAR, setup, started_sandbox

DB = setup("bench-egress.sqlite3", slot="2")

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from sandboxes import network, services  # noqa: E402
from teams.models import Team  # noqa: E402

IMAGE = "ccpanel/test-busybox:latest"
NET = 120  # 198.18.120.0/24
NS, HOST_IF, NS_IF = f"ccp-bench{NET}", f"ccpbh{NET}", f"ccpbn{NET}"
PORT = 18090
SMALL_PORT = 18091  # answers "ok" and closes: the connect benchmark
NAME = "bench.example.test"
SMALL = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(b"ok")
    except OSError:
        pass
    c.close()
"""
DNS = """
import socket, sys
from dnslib import A, QTYPE, RR, DNSRecord
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    q = DNSRecord.parse(data); r = q.reply()
    if str(q.q.qname).rstrip(".") == sys.argv[2] and q.q.qtype == QTYPE.A:
        r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(sys.argv[1]), ttl=30))
    s.sendto(r.pack(), peer)
"""
SERVER = """
import socket, sys, time
size = int(sys.argv[1]) << 20
chunk = bytes(range(256)) * 4096
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.%d.10" % int(sys.argv[2]), int(sys.argv[3]))); s.listen(4)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    t0 = time.perf_counter(); sent = 0
    while sent < size:
        sent += c.send(chunk[: min(len(chunk), size - sent)])
    c.shutdown(socket.SHUT_WR)
    c.recv(1)  # the client closes once it has everything
    print("%.6f" % (time.perf_counter() - t0), flush=True)
    c.close()
"""


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def internet_up(mb: int) -> subprocess.Popen:
    internet_down()
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
    sh("ip", "link", "set", NS_IF, "netns", NS)
    sh("ip", "addr", "add", f"198.18.{NET}.1/24", "dev", HOST_IF)
    sh("ip", "link", "set", HOST_IF, "up")
    for cmd in (
        ["ip", "addr", "add", f"198.18.{NET}.10/24", "dev", NS_IF],
        ["ip", "link", "set", NS_IF, "up"],
        ["ip", "link", "set", "lo", "up"],
        ["ip", "route", "add", "default", "via", f"198.18.{NET}.1"],
    ):
        sh("ip", "netns", "exec", NS, *cmd)
    server = subprocess.Popen(
        ["ip", "netns", "exec", NS, sys.executable, "-c", SERVER, str(mb), str(NET), str(PORT)], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    return server


def internet_down() -> None:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)


def download(container_id: str, server: subprocess.Popen) -> float:
    done = subprocess.run(
        ["docker", "exec", container_id, "sh", "-c", f"nc 198.18.{NET}.10 {PORT} > /dev/null"], capture_output=True, timeout=300
    )
    if done.returncode != 0:
        raise SystemExit(f"the download failed: {done.stderr.decode()[:200]}")
    assert server.stdout is not None
    return float(server.stdout.readline())


def connect_loop(container_id: str, target: str, n: int) -> float:
    """Seconds per connection: n connections to target:SMALL_PORT in one `docker exec`."""
    script = f"for i in $(seq {n}); do nc -w 2 {target} {SMALL_PORT} </dev/null >/dev/null || exit 1; done"
    t0 = time.perf_counter()
    done = subprocess.run(["docker", "exec", container_id, "sh", "-c", script], capture_output=True, timeout=300)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"a connection to {target} failed: {done.stderr.decode()[:200]}")
    return elapsed / n


def allowlist_connect(actor, team, runs: int, per_run: int = 20) -> tuple[float, float]:
    """(allowlist by name, internet by address), seconds per connection, medians."""
    from sandboxes.network import resolver

    address = f"198.18.{NET}.10"
    helpers = [
        subprocess.Popen(
            ["ip", "netns", "exec", NS, sys.executable, "-c", SMALL, address, str(SMALL_PORT)], stdout=subprocess.PIPE, text=True
        ),
        subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", DNS, address, NAME], stdout=subprocess.PIPE, text=True),
    ]
    for h in helpers:
        assert h.stdout is not None and h.stdout.readline().strip() == "ready"
    settings.SANDBOX_DNS_UPSTREAM = [address]
    servers = resolver.serve()
    try:
        small = {"actor": actor, "team": team, "image": IMAGE, "memory_mb": 256, "cpus": Decimal("0.5")}
        allowed = started_sandbox(**small, name="eg-allow", network_mode="allowlist", egress_allow=f"{NAME}:{SMALL_PORT}")
        internet = started_sandbox(**small, name="eg-open", network_mode="internet")
        by_name, by_address = [], []
        for i in range(runs + 1):  # the first pair warms up
            a = connect_loop(allowed.container_id, NAME, per_run)
            b = connect_loop(internet.container_id, address, per_run)
            if i:
                by_name.append(a)
                by_address.append(b)
        return statistics.median(by_name), statistics.median(by_address)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for h in helpers:
            h.kill()


def clean() -> None:
    label = f"io.ccpanel.instance={settings.PANEL_INSTANCE}"
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    vols = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label={label}"], capture_output=True, text=True).stdout.split()
    if vols:
        subprocess.run(["docker", "volume", "rm", "-f", *vols], capture_output=True)
    root = Path(settings.WORKSPACE_ROOT)
    if root.is_dir() and (VAR in root.parents):
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--mb", type=int, default=512, help="MiB per download")
    parser.add_argument("--sandboxes", type=int, default=20)
    args = parser.parse_args()
    clean()
    call_command("migrate", verbosity=0)
    call_command("egress", "apply")
    team = Team.objects.create(name="Bench", slug="bench")
    actor = services.SystemActor("bench")
    made = []
    for i in range(args.sandboxes):
        made.append(
            started_sandbox(actor=actor, team=team, name=f"eg{i}", image=IMAGE, memory_mb=256, cpus=Decimal("0.5"), network_mode="internet")
        )
    server = internet_up(args.mb)
    try:
        probe = made[0].container_id
        with_rules, without = [], []
        for i in range(args.runs + 1):  # the first pair warms up
            network.apply()
            a = download(probe, server)
            network.remove()
            b = download(probe, server)
            if i:
                with_rules.append(a)
                without.append(b)
        network.apply()
        applies = []
        for _ in range(args.runs):
            network.remove()  # a change to put back: the whole rule set, as a policy change would
            t0 = time.perf_counter()
            network.apply()
            left = network.problems()
            applies.append(time.perf_counter() - t0)
            assert not left, left
        allow_s, open_s = allowlist_connect(actor, team, args.runs)
    finally:
        server.kill()
        internet_down()
        network.apply()
        clean()

    mbps_with = args.mb / statistics.median(with_rules)
    mbps_without = args.mb / statistics.median(without)
    ratio = mbps_with / mbps_without
    apply_ms = statistics.median(applies) * 1000
    print(f"download {args.mb} MiB x {args.runs} (after 1 warm-up), interleaved, one of {args.sandboxes} running sandboxes")
    print(f"with the rules     {mbps_with:8.1f} MiB/s (median)")
    print(f"without the rules  {mbps_without:8.1f} MiB/s (median)")
    print(f"throughput ratio   {ratio:.3f} (target >= 0.95)")
    print(f"apply + verify with {args.sandboxes} sandboxes running: p50 {apply_ms:.1f} ms, max {max(applies) * 1000:.1f} ms")
    added_ms = (allow_s - open_s) * 1000
    print(f"connect, allowlist by name (DNS included) {allow_s * 1000:.1f} ms, internet by address {open_s * 1000:.1f} ms (medians)")
    print(f"allowlist adds {added_ms:.1f} ms a connection")
    print(
        json.dumps(
            {
                "throughput_ratio": round(ratio, 3),
                "allowlist_connect_ms": round(added_ms, 1),
                "allowlist_by_name_ms": round(allow_s * 1000, 1),
                "internet_by_address_ms": round(open_s * 1000, 1),
                "apply_20_ms": round(apply_ms, 1),
                "mib_s_with_rules": round(mbps_with, 1),
                "mib_s_without_rules": round(mbps_without, 1),
                "runs": args.runs,
                "sandboxes": args.sandboxes,
            }
        )
    )


if __name__ == "__main__":
    main()
