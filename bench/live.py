"""The live views under load, through the real websocket server (Daphne, as `make run` serves
the websockets), a real Redis channel layer and real containers.

Prints, in one run:
- log latency: a line written inside a container until it arrives at the websocket client, p50
  and p99, next to docker-py following the same log directly (the floor);
- a burst of 5,000 lines: delivered complete (every line, in order) and its throughput;
- terminal round trip: a keystroke sent until its echo comes back, p50 and p99;
- the websocket server's CPU, as a share of one core, while 20 running sandboxes stream stats at
  1 Hz to one viewer;
- the websocket server's added memory with 20 log and 20 stats sockets open;
- one file-activity walk of 100,000 files (target: under a second).
The last line is a JSON object: log_p50_ms, log_p99_ms, burst_lines_per_s, burst_complete,
term_p50_ms, term_p99_ms, stats_cpu_pct_of_core, added_mem_mb (and files_100k_s).

Usage: .venv/bin/python bench/live.py [--samples 200]   (needs Docker and Redis; `make bench`)
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path

from _setup import ROOT, VAR, setup, started_sandbox

DB = setup("bench-live.sqlite3", slot="6")

import docker  # noqa: E402 - the floor: docker-py following the same log
import websockets  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from sandboxes import services  # noqa: E402
from sandboxes.models import Sandbox  # noqa: E402
from teams.models import Membership, Team  # noqa: E402

IMAGE = "ccpanel/test-busybox:latest"
ACTOR = services.SystemActor("bench")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def clean(instance: str) -> None:
    label = f"io.ccpanel.instance={instance}"
    for kind, listing in (("container", ["ps", "-aq"]), ("volume", ["volume", "ls", "-q"])):
        ids = subprocess.run(["docker", *listing, "--filter", f"label={label}"], capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", kind, "rm", "-f", *ids], capture_output=True)
    subprocess.run(["rm", "-rf", str(settings.WORKSPACE_ROOT)], check=False)


class Bench:
    def __init__(self, samples: int):
        self.samples = samples
        call_command("migrate", verbosity=0)
        call_command("egress", "apply")  # sandboxes on the network start only with their rules
        clean(settings.PANEL_INSTANCE)
        self.team = Team.objects.get(slug="default")
        user = get_user_model().objects.create_superuser("bench", "", "bench-pass-123")
        Membership.objects.create(user=user, team=self.team, role="admin")
        client = Client(SERVER_NAME="127.0.0.1")
        client.force_login(user)
        self.cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{settings.PANEL_PORT}"
        env = dict(os.environ, PANEL_TEST_DATABASE_URL=f"sqlite:///{DB}")
        self.log = open(VAR / "log" / "bench-daphne.log", "w")  # noqa: SIM115
        self.server = subprocess.Popen(
            [str(ROOT / ".venv/bin/daphne"), "-b", "127.0.0.1", "-p", str(self.port), "controlpanel.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.time() > deadline or self.server.poll() is not None:
                raise SystemExit("daphne did not start; see var/log/bench-daphne.log")
            time.sleep(0.2)

    def sandbox(self, name: str) -> Sandbox:
        return started_sandbox(actor=ACTOR, team=self.team, name=name, image=IMAGE, memory_mb=256, cpus=Decimal("0.5"), network_mode="none")

    def connect(self, path: str):
        return websockets.connect(
            f"ws://127.0.0.1:{self.port}{path}",
            origin=self.origin,
            additional_headers={"Cookie": self.cookie},
            max_size=None,
        )

    def close(self):
        self.server.terminate()
        self.server.wait(10)
        clean(settings.PANEL_INSTANCE)


def start_pipe_reader(sandbox: Sandbox) -> Path:
    """A loop inside the container that prints every line written to a FIFO in its Projects
    folder: the host decides when a line is written, and stamps it with its own clock."""
    fifo = sandbox.workspace_path / "Projects" / "pipe"
    os.mkfifo(fifo)
    os.chown(fifo, 1000, 1000)
    subprocess.run(
        [
            "docker",
            "exec",
            "-d",
            sandbox.container_id,
            "sh",
            "-c",
            'exec >/proc/1/fd/1; exec 3<>/workspace/Projects/pipe; while read -r line <&3; do echo "$line"; done',
        ],
        check=True,
    )
    time.sleep(0.3)
    return fifo


async def log_latency(bench: Bench, sandbox: Sandbox, fifo: Path) -> tuple[list[float], list[float]]:
    panel, floor = [], []
    received: dict[str, float] = {}
    sdk_received: dict[str, float] = {}
    api = docker.from_env().api

    def follow_with_sdk():
        for chunk in api.logs(sandbox.container_id, stream=True, follow=True, tail=0, stdout=True, stderr=True):
            for line in chunk.decode(errors="replace").splitlines():
                sdk_received.setdefault(line, time.time())

    threading.Thread(target=follow_with_sdk, daemon=True).start()
    async with bench.connect(f"/ws/sandboxes/{sandbox.pk}/logs/?tail=0") as ws:
        await asyncio.sleep(0.5)
        with open(fifo, "w") as pipe:
            for i in range(bench.samples):
                key = f"lat-{i}"
                sent = time.time()
                pipe.write(f"{key}\n")
                pipe.flush()
                while key not in received:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    now = time.time()
                    for _, _, text in message.get("l", []):
                        received.setdefault(text, now)
                panel.append((received[key] - sent) * 1000)
                deadline = time.time() + 2
                while key not in sdk_received and time.time() < deadline:
                    await asyncio.sleep(0.0005)
                if key in sdk_received:
                    floor.append((sdk_received[key] - sent) * 1000)
                await asyncio.sleep(0.02)
    return panel, floor


async def burst(bench: Bench, sandbox: Sandbox, lines: int = 5000) -> tuple[float, bool]:
    async with bench.connect(f"/ws/sandboxes/{sandbox.pk}/logs/?tail=0") as ws:
        await asyncio.sleep(0.5)
        started = time.time()
        subprocess.Popen(
            [
                "docker",
                "exec",
                sandbox.container_id,
                "sh",
                "-c",
                f"exec >/proc/1/fd/1; i=1; while [ $i -le {lines} ]; do echo burst-$i; i=$((i+1)); done",
            ]
        )
        got: list[str] = []
        size = 0
        while len(got) < lines:
            raw = await asyncio.wait_for(ws.recv(), 30)
            size += len(raw)
            got += [text for _, _, text in json.loads(raw).get("l", []) if text.startswith("burst-")]
            await ws.send(json.dumps({"ack": size}))
        elapsed = time.time() - started
    return lines / elapsed, got == [f"burst-{i}" for i in range(1, lines + 1)]


async def terminal_round_trip(bench: Bench, sandbox: Sandbox) -> list[float]:
    times = []
    async with bench.connect(f"/ws/sandboxes/{sandbox.pk}/terminal/") as ws:
        await ws.send(json.dumps({"t": "resize", "cols": 120, "rows": 40}))
        await asyncio.sleep(1.0)
        while True:  # drain the prompt
            try:
                await asyncio.wait_for(ws.recv(), 0.3)
            except TimeoutError:
                break
        for i in range(bench.samples):
            char = "abcdefghij"[i % 10].encode()
            sent = time.perf_counter()
            await ws.send(char)
            while True:
                data = await asyncio.wait_for(ws.recv(), 5)
                if isinstance(data, bytes) and char in data:
                    break
            times.append((time.perf_counter() - sent) * 1000)
            if i % 50 == 49:
                await ws.send(b"\x15")  # Ctrl-U: clear the line
                await asyncio.sleep(0.05)
    return times


async def stats_cpu(bench: Bench, seconds: float = 30) -> float:
    async with bench.connect("/ws/stats/") as ws:
        await asyncio.wait_for(ws.recv(), 10)
        before, started = cpu_seconds(bench.server.pid), time.time()
        ticks = 0
        while time.time() - started < seconds:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            ticks += 1
            assert len(message["s"]) >= 20, f"stats for {len(message['s'])} sandboxes"
        used = cpu_seconds(bench.server.pid) - before
        return 100 * used / (time.time() - started)


async def memory_with_sockets(bench: Bench, sandboxes: list[Sandbox]) -> float:
    before = rss_mb(bench.server.pid)
    sockets = []
    for sandbox in sandboxes:
        for view in ("logs/?tail=200", "stats/"):
            ws = await bench.connect(f"/ws/sandboxes/{sandbox.pk}/{view}").__aenter__()
            sockets.append(ws)
    await asyncio.sleep(5)
    after = rss_mb(bench.server.pid)
    for ws in sockets:
        await ws.close()
    return after - before


def files_walk(sandbox: Sandbox, count: int = 100_000) -> float:
    from sandboxes.activity import recent_files

    projects = sandbox.workspace_path / "Projects" / "many"
    for d in range(count // 1000):
        folder = projects / f"d{d:03d}"
        folder.mkdir(parents=True)
        for i in range(1000):
            (folder / f"f{i:04d}.txt").touch()
    started = time.perf_counter()
    found = recent_files(sandbox, within_seconds=3600)
    elapsed = time.perf_counter() - started
    assert found.scanned >= count, found.scanned
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    bench = Bench(args.samples)
    try:
        first = bench.sandbox("live-0")
        fifo = start_pipe_reader(first)
        panel, floor = asyncio.run(log_latency(bench, first, fifo))
        rate, complete = asyncio.run(burst(bench, first))
        term = asyncio.run(terminal_round_trip(bench, first))
        others = [first] + [bench.sandbox(f"live-{i}") for i in range(1, 20)]
        cpu = asyncio.run(stats_cpu(bench))
        memory = asyncio.run(memory_with_sockets(bench, others))
        walk = files_walk(others[1])
    finally:
        bench.close()
    figures = {
        "log_p50_ms": round(statistics.median(panel), 2),
        "log_p99_ms": round(pct(panel, 99), 2),
        "burst_lines_per_s": round(rate),
        "burst_complete": complete,
        "term_p50_ms": round(statistics.median(term), 2),
        "term_p99_ms": round(pct(term, 99), 2),
        "stats_cpu_pct_of_core": round(cpu, 1),
        "added_mem_mb": round(memory, 1),
        "files_100k_s": round(walk, 3),
    }
    print(
        f"log latency, container to websocket: p50 {figures['log_p50_ms']} ms, p99 {figures['log_p99_ms']} ms "
        f"(docker-py alone: p50 {statistics.median(floor):.2f} ms, p99 {pct(floor, 99):.2f} ms); target p50 < 25, p99 < 150"
    )
    print(f"burst of 5000 lines: {figures['burst_lines_per_s']} lines/s, complete and in order: {complete}")
    print(f"terminal keystroke to echo: p50 {figures['term_p50_ms']} ms, p99 {figures['term_p99_ms']} ms; target p50 < 30")
    print(
        f"websocket server CPU, 20 running sandboxes at 1 Hz to one viewer: {figures['stats_cpu_pct_of_core']} % of one core; target < 15"
    )
    print(f"websocket server memory added by 20 log and 20 stats sockets: {figures['added_mem_mb']} MB")
    print(f"file activity, one walk of 100,000 files: {figures['files_100k_s']} s; target < 1")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
