"""Agent events ingested per second through the real receiver, with the dashboard's p99 meanwhile.

`measure()` (bench/proxy.py merges its keys into its JSON line) starts `manage.py agent_receiver`
as the Procfile does, SANDBOXES sandboxes (the Claude Code image, network mode `none`) and
gunicorn serving the panel as `make run` does. Then node in each sandbox POSTs a real Claude Code
request (tests/agents/claude_logs.json, its 20 records repeated to RECORDS a request) to the
sandbox's own 127.0.0.1:4318, LOOPS requests at a time on keep-alive connections (as Claude Code's
exporter does), while CLIENTS keep-alive clients ask for the dashboard for SECONDS (after WARM).
`otel_ingest_eps`: rows written to the database in that window, per second;
`dashboard_p99_ms_during_ingest`: the p99 of the dashboard's answers meanwhile;
`otel_ingest_cpu_us_per_event`: the receiver's CPU time (all its threads) an event. The per-sandbox
budget (AGENT_EVENTS_A_SECOND, 200 by default) is raised for the run: the figure is what the
receiver and the database take, not what one sandbox is allowed.

Run alone: .venv/bin/python bench/_otel_ingest.py   (prints a JSON line; needs Docker and root)
"""

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import ROOT, VAR, cpu_seconds, free_port, setup

SECONDS = 10
SANDBOXES = 4
LOOPS = 3  # requests at a time from each sandbox
CLIENTS = 4  # concurrent dashboard readers, each asking again as soon as it has its answer
RECORDS = 300  # log records a request (the sample's 20, repeated)
IMAGE = "ccpanel/claude-code:latest"  # node, as Claude Code's own exporter (keep-alive HTTP/1.1)
WARM = 2.0  # seconds of posting before the window (the posters start, the listeners fill)
# The poster inside a sandbox: argv[2] requests at a time on keep-alive connections, for argv[1] ms.
POSTER = """
const http = require("http"), body = require("fs").readFileSync("/tmp/p.json");
const [ms, loops] = process.argv.slice(1).map(Number), agent = new http.Agent({keepAlive: true, maxSockets: loops});
const headers = {"Content-Type": "application/json", "Content-Length": body.length};
function go() {
  const req = http.request({host: "127.0.0.1", port: 4318, path: "/v1/logs", method: "POST", agent, headers}, (res) => {
    res.resume(); res.on("end", () => setImmediate(go));
  });
  req.on("error", () => setTimeout(go, 50));
  req.end(body);
}
for (let i = 0; i < loops; i++) go();
setTimeout(() => process.exit(0), ms);
"""
URL = "http://127.0.0.1:4318/v1/logs"


def _payload() -> bytes:
    sample = json.loads((ROOT / "tests/agents/claude_logs.json").read_bytes())
    records = sample["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    sample["resourceLogs"][0]["scopeLogs"][0]["logRecords"] = (records * (RECORDS // len(records) + 1))[:RECORDS]
    return json.dumps(sample, separators=(",", ":")).encode()


def _wait(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"the bench gave up waiting for {what}")
        time.sleep(0.2)


def _posting(container_id: str) -> bool:
    options = "{method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'}"
    script = f"fetch('{URL}', {options}).then(r => r.text()).then(console.log, () => {{}})"
    done = subprocess.run(["docker", "exec", container_id, "node", "-e", script], capture_output=True, text=True)
    return done.stdout.strip() == "{}"


def _seed():
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from teams.models import Membership, Team

    call_command("migrate", verbosity=0)
    team = Team.objects.get_or_create(slug="default", defaults={"name": "Default"})[0]
    user = get_user_model().objects.create_user(f"otel-bench-{os.getpid()}", password="bench-pass-123")
    Membership.objects.create(user=user, team=team, role="operator")
    client = Client(SERVER_NAME="127.0.0.1")
    client.force_login(user)
    return team, f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def _sandboxes(team) -> list:
    from _setup import started_sandbox

    from sandboxes.services import SystemActor

    actor = SystemActor("bench")
    return [
        started_sandbox(actor=actor, team=team, name=f"otel-bench-{i}", image=IMAGE, memory_mb=512, cpus=1, network_mode="none")
        for i in range(SANDBOXES)
    ]


def _destroy(sandboxes) -> None:
    from sandboxes import services

    for sandbox in sandboxes:
        try:
            services.sandbox_request_action(actor=services.SystemActor("bench"), sandbox=sandbox, action="destroy", enqueue=False)
            services.sandbox_perform(sandbox_id=sandbox.pk, action="destroy")
        except Exception as exc:  # noqa: BLE001 - a bench's cleanup says what it left
            print(f"could not destroy {sandbox.name}: {exc}", file=sys.stderr)


def _dashboard(port: int, cookie: str, *, seconds: float) -> list[float]:
    """CLIENTS keep-alive connections asking for the dashboard for `seconds`: each answer's ms
    (an answer other than 200 stops the bench: the figure would lie)."""
    latencies: list[float] = []
    failures: list[str] = []
    end = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < end:
            t0 = time.perf_counter()
            conn.request("GET", "/", headers={"Cookie": cookie, "Host": "127.0.0.1"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failures.append(str(response.status))
                return
            latencies.append(1000 * (time.perf_counter() - t0))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"the dashboard answered {failures[0]}")
    return latencies


def _started(port: int, cookie: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/", headers={"Cookie": cookie, "Host": "127.0.0.1"})
        return conn.getresponse().status == 200
    except OSError:
        return False


def measure() -> dict:
    """{"otel_ingest_eps": ..., "dashboard_p99_ms_during_ingest": ...} (see the module's docstring)."""
    from agents.models import AgentEvent

    team, cookie = _seed()
    (VAR / "log").mkdir(parents=True, exist_ok=True)
    budget = {"AGENT_EVENTS_A_SECOND": "1000000", "AGENT_EVENTS_BURST": "1000000", "AGENT_RECEIVER_RECONCILE_SECONDS": "1"}
    receiver_log = open(VAR / "log" / "bench-otel-receiver.log", "w")  # noqa: SIM115
    receiver = subprocess.Popen(
        [sys.executable, "manage.py", "agent_receiver"], cwd=ROOT, env=dict(os.environ, **budget), stdout=receiver_log, stderr=receiver_log
    )
    port = free_port()
    server_log = open(VAR / "log" / "bench-otel-gunicorn.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "controlpanel.wsgi", "-c", str(ROOT / "scripts/gunicorn.conf.py")],
        cwd=ROOT,
        env=dict(os.environ, PANEL_PORT=str(port)),
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    sandboxes: list = []
    posters: list[subprocess.Popen] = []
    try:
        sandboxes = _sandboxes(team)
        payload = _payload()
        for sandbox in sandboxes:
            subprocess.run(["docker", "exec", "-i", sandbox.container_id, "sh", "-c", "cat > /tmp/p.json"], input=payload, check=True)
            _wait(lambda s=sandbox: _posting(s.container_id), 30, f"{sandbox.name}'s listener")
        _wait(lambda: _started(port, cookie), 30, "gunicorn")
        _dashboard(port, cookie, seconds=2.0)  # warm every worker (templates, connections)
        duration_ms = str(int(1000 * (WARM + SECONDS + 1)))
        posters = [
            subprocess.Popen(["docker", "exec", s.container_id, "node", "-e", POSTER, duration_ms, str(LOOPS)], stdout=subprocess.DEVNULL)
            for s in sandboxes
        ]
        time.sleep(WARM)
        before, started, cpu = AgentEvent.objects.count(), time.monotonic(), cpu_seconds(receiver.pid)
        latencies = _dashboard(port, cookie, seconds=SECONDS)
        ingested, elapsed = AgentEvent.objects.count() - before, time.monotonic() - started
        cpu = cpu_seconds(receiver.pid) - cpu
        for p in posters:
            p.wait(30)
    finally:
        for p in posters:
            p.kill()
        _destroy(sandboxes)
        receiver.terminate()
        receiver.wait(15)
        server.terminate()
        server.wait(15)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return {
        "otel_ingest_eps": round(ingested / elapsed, 1),
        "dashboard_p99_ms_during_ingest": round(p99, 1),
        # What other load on the machine changes far less than the rate: the receiver's CPU an event.
        "otel_ingest_cpu_us_per_event": round(1e6 * cpu / max(ingested, 1), 1),
    }


if __name__ == "__main__":
    os.environ.setdefault("STORAGE_POOL", "none")
    setup("bench-otel.sqlite3", slot="61")
    print(json.dumps(measure()))
