"""The credential proxy's cost (sandboxes.network.proxy), in one run.

- inject_overhead_ms: what the proxy adds to one HTTPS request with injection: p50 of requests
  through it to a bound host (TLS intercepted, the header set, the decision counted) minus p50 of
  the same requests straight to the stand-in; each on a kept-alive connection, one after the
  other, from a client process of its own (target < 5).
- proxy_rps: HTTPS requests a second through it with injection, from 20 concurrent clients (four
  processes of five threads, each on its kept-alive tunnel) for --seconds (target >= 500).

The stand-in is an HTTPS server in a network namespace on a veth pair in 198.18.0.0/15 (as the
tests use), with a CA of the bench's own; the proxy runs in this process on 127.0.0.1, its
clients' table stubbed to know 127.0.0.1 as a sandbox holding a proxy secret (the table of real
sandboxes is read from Docker every half second, outside the request path: the tests cover it).
So the figures are the proxy's own work, without Docker's NAT. If bench/_otel_ingest.py exists
with `measure() -> dict`, its keys join the last line.

Usage: .venv/bin/python bench/proxy.py [--seconds S] [--requests N]   (needs root)
Traffic goes only to loopback and the namespace this script makes. The last line is a JSON object.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _setup import ROOT, setup

# Plain folders for the sandboxes bench/_otel_ingest.py makes (as bench/lifecycle.py's: the
# storage pool is bench/storage.py's to measure).
os.environ.setdefault("STORAGE_POOL", "none")
DB = setup("bench-proxy.sqlite3", slot="7")

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from sandboxes import secrets  # noqa: E402
from sandboxes.network import proxy, proxy_ca  # noqa: E402
from tests.sandboxes.network import standin  # noqa: E402

NET = 127  # 198.18.127.0/24
NS, HOST_IF, NS_IF = f"ccp-bench{NET}", f"ccpbh{NET}", f"ccpbn{NET}"
ADDRESS = f"198.18.{NET}.10"
NAME = "bound.example.test"
PROXY_PORT = 18947
KEY = "bench-secret-value"
# One client process: `threads` threads, each on one kept-alive connection (through the proxy's
# tunnel, or straight to the stand-in), for `seconds` or `count` requests; prints JSON.
CLIENT = r"""
import http.client, json, ssl, sys, threading, time
how, threads, seconds, count, cafile, name, address, proxy_port = sys.argv[1:9]
ctx = ssl.create_default_context(cafile=cafile)
if how == "direct":
    ctx.check_hostname = False
def connection():
    if how == "proxy":
        c = http.client.HTTPSConnection("127.0.0.1", int(proxy_port), context=ctx, timeout=10)
        c.set_tunnel(name, 443)
    else:
        c = http.client.HTTPSConnection(address, 443, context=ctx, timeout=10)
    return c
done, lat = [0] * int(threads), []
def run(i):
    c = connection()
    end = time.monotonic() + float(seconds)
    n = 0
    while (time.monotonic() < end) if float(seconds) else (n < int(count)):
        t0 = time.perf_counter()
        c.request("GET", "/v1/messages", headers={"Host": name, "x-api-key": "ccp-placeholder-x"})
        body = c.getresponse().read()
        if i == 0 and not float(seconds):
            lat.append(time.perf_counter() - t0)
        n += 1
    done[i] = n
    assert b"x-api-key" in body
    last[i] = json.loads(body)["headers"].get("x-api-key", "")
last = [""] * int(threads)
ts = [threading.Thread(target=run, args=(i,)) for i in range(int(threads))]
t0 = time.monotonic()
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps({"requests": sum(done), "seconds": time.monotonic() - t0, "latencies": lat, "key": last[0]}))
"""


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def internet_up(folder: Path) -> subprocess.Popen:
    internet_down()
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
    sh("ip", "link", "set", NS_IF, "netns", NS)
    sh("ip", "addr", "add", f"198.18.{NET}.1/24", "dev", HOST_IF)
    sh("ip", "link", "set", HOST_IF, "up")
    for cmd in (
        ["ip", "addr", "add", f"{ADDRESS}/24", "dev", NS_IF],
        ["ip", "link", "set", NS_IF, "up"],
        ["ip", "link", "set", "lo", "up"],
        ["ip", "route", "add", "default", "via", f"198.18.{NET}.1"],
    ):
        sh("ip", "netns", "exec", NS, *cmd)
    certs = standin.make_certificates(folder, [NAME])
    server = subprocess.Popen(
        ["ip", "netns", "exec", NS, sys.executable, "-c", standin.SERVER, ADDRESS, "443", str(certs["cert"]), str(certs["key"])]
    )
    deadline = time.monotonic() + 10
    while f"{ADDRESS}:443" not in subprocess.run(["ip", "netns", "exec", NS, "ss", "-lnt"], capture_output=True, text=True).stdout:
        if time.monotonic() > deadline:
            raise SystemExit("the stand-in did not start")
        time.sleep(0.05)
    return server


def internet_down() -> None:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)


def clients(how: str, *, processes: int, threads: int, seconds: float, count: int, cafile: Path) -> list[dict]:
    args = [how, str(threads), str(seconds), str(count), str(cafile), NAME, ADDRESS, str(PROXY_PORT)]
    running = [subprocess.Popen([sys.executable, "-c", CLIENT, *args], stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    out = [json.loads(p.communicate(timeout=seconds + 20)[0].strip().splitlines()[-1]) for p in running]
    return out


def stub_clients() -> None:
    """127.0.0.1 stands for a sandbox in internet mode holding one proxy secret bound to NAME."""
    binding = secrets.Binding("API_KEY", (NAME,), "x-api-key", "", KEY)
    client = proxy.Client(sandbox_id=0, mode="internet", entries=None, bindings=[binding])
    proxy.read_clients = lambda: {"127.0.0.1": client}  # type: ignore[assignment]
    proxy.Decisions.flush = lambda self: len(self.pending)  # type: ignore[method-assign]  # counted, not written: no sandbox row here
    proxy.Ranges.refused = lambda self, address: False  # type: ignore[method-assign]  # the host's addresses include the veth's
    proxy.Names._ask = staticmethod(lambda name, plain: ([ADDRESS], 300))  # type: ignore[method-assign]


def extra() -> dict:
    path = ROOT / "bench" / "_otel_ingest.py"
    if not path.exists():
        return {}
    spec = importlib.util.spec_from_file_location("_otel_ingest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.measure())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0, help="of the throughput run")
    parser.add_argument("--requests", type=int, default=300, help="of each latency run")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    folder = Path(tempfile.mkdtemp(prefix="ccp-bench-proxy-"))
    folder.chmod(0o755)
    settings.SANDBOX_PROXY_CA_DIR = str(folder / "ca")
    server = internet_up(folder)
    stub_clients()
    settings.SANDBOX_PROXY_UPSTREAM_CA = str(folder / "standin-ca.pem")
    running = proxy.start_thread(["127.0.0.1"], PROXY_PORT)
    trust = folder / "trust.pem"
    trust.write_text(proxy_ca.ensure() + (folder / "standin-ca.pem").read_text())
    try:
        one = dict(processes=1, threads=1, seconds=0, count=args.requests, cafile=trust)
        clients("proxy", **{**one, "count": 20})  # warm-up
        via = clients("proxy", **one)[0]
        straight = clients("direct", **one)[0]
        assert via["key"] == KEY and straight["key"] == "ccp-placeholder-x", (via["key"], straight["key"])
        load = clients("proxy", processes=4, threads=5, seconds=args.seconds, count=0, cafile=trust)
    finally:
        running.stop()
        server.kill()
        server.wait()
        internet_down()
    p50_via, p50_straight = statistics.median(via["latencies"]), statistics.median(straight["latencies"])
    overhead = (p50_via - p50_straight) * 1000
    rps = sum(c["requests"] for c in load) / max(c["seconds"] for c in load)
    print(
        f"one request, kept-alive: through the proxy with injection p50 {p50_via * 1000:.2f} ms, straight p50 {p50_straight * 1000:.2f} ms"
    )
    print(f"the proxy adds {overhead:.2f} ms a request (target < 5)")
    print(f"20 concurrent clients for {args.seconds:.0f} s: {rps:.0f} requests/s through the proxy (target >= 500)")
    print(
        json.dumps(
            {
                "inject_overhead_ms": round(overhead, 2),
                "proxy_rps": round(rps),
                "via_proxy_p50_ms": round(p50_via * 1000, 2),
                "direct_p50_ms": round(p50_straight * 1000, 2),
                "requests": args.requests,
                "seconds": args.seconds,
                **extra(),
            }
        )
    )


if __name__ == "__main__":
    main()
