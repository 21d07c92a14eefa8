"""The API under load, and what the API adds to a create.

1. The sandbox list: GET /api/v1/sandboxes/ with a personal token (Authorization: Bearer), 200
   sandboxes in the database (rows in mixed states: the list reads only the database, no Docker),
   served exactly as `make run` serves the pages (gunicorn with scripts/gunicorn.conf.py) on a
   free loopback port, loaded by wrk, 50 connections, for 30 s. The list answers 50 to a page
   (the dashboard's page size), with the count of all 200. Targets: >= 300 requests a second,
   p99 < 250 ms.
2. create_overhead_ms: the p50 of a create through the API (POST /api/v1/sandboxes/ through
   Django's test client, in this process: token check, parsing, the service, the answer's
   serialisation) less the p50 of the service call alone (sandboxes.services.sandbox_create)
   with the same inputs. Both sides: the fake engine (no Docker), no queue (enqueue=False: the
   API's call is given it here, as the bench's only change to the code it measures), runs
   interleaved so that a slower database later on weighs on both alike. Target < 20 ms.

Prints the figures (and, with --profile, where the time of a list request and of an API create
goes: cProfile), then, as its last line, a JSON object: list_rps, list_p50_ms, list_p99_ms,
list_errors, list_server_cpu_ms (gunicorn's CPU time a request, all its processes),
create_api_p50_ms, create_service_p50_ms, create_overhead_ms, and create_overhead_cpu_ms (the
same difference of p50s in this process's CPU time, which other work on the machine changes far
less than the wall-clock time).

Usage: .venv/bin/python bench/api.py [--seconds 30] [--clients 50] [--sandboxes 200] [--creates 100] [--profile]
"""

import argparse
import cProfile
import functools
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal

from _setup import ROOT, VAR, cpu_seconds, free_port, parse_wrk, setup

os.environ.setdefault("STORAGE_POOL", "none")  # no pool: a create makes plain folders (the fast tests' way)
DB = setup("bench-api.sqlite3", slot="8")

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from api.services import api_token_create  # noqa: E402
from sandboxes import engine, services  # noqa: E402
from sandboxes.models import Sandbox  # noqa: E402
from teams.models import Membership, Team  # noqa: E402
from tests.support.cleanup import remove_own_test_resources  # noqa: E402
from tests.support.docker import TEST_IMAGE  # noqa: E402
from tests.support.fakes import FakeEngine  # noqa: E402

LIST_LUA = """
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CCPANEL_TOKEN")
"""


def seed(sandboxes: int):
    """The sandboxes (rows in mixed states) and an operator of their team with an operate token."""
    call_command("migrate", verbosity=0)
    team = Team.objects.get(slug="default")
    statuses = ["running", "stopped", "paused", "error", "running"]
    Sandbox.objects.bulk_create(
        Sandbox(
            name=f"bench-{i:03d}",
            team=team,
            image="ccpanel/claude-code:latest",
            memory_mb=8192,
            cpus=2,
            pids_limit=1024,
            status=statuses[i % len(statuses)],
            status_detail="The container exited with code 3." if i % 5 == 3 else "",
        )
        for i in range(sandboxes)
    )
    user = get_user_model().objects.create_user("bench", password="bench-pass-123")
    Membership.objects.create(user=user, team=team, role="operator")
    token = api_token_create(actor=user, name="bench", scope="operate", expires_in_days=1).secret
    return team, user, token


def bench_list(token: str, *, sandboxes: int, seconds: int, clients: int) -> dict:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (apt-get install wrk; `make bench` installs it)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1/sandboxes/"
    script = VAR / "bench-api.lua"
    script.write_text(LIST_LUA)
    env = dict(os.environ, PANEL_PORT=str(port))
    wrk_env = dict(os.environ, CCPANEL_TOKEN=token)
    log = open(VAR / "log" / "bench-api-gunicorn.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "controlpanel.wsgi", "-c", str(ROOT / "scripts/gunicorn.conf.py")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - the bench's own http://127.0.0.1 server
                    body = json.loads(response.read())
                assert body["count"] == sandboxes and len(body["results"]) == settings.SANDBOX_PAGE_SIZE, "the list is not as seeded"
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("gunicorn did not start; see var/log/bench-api-gunicorn.log") from None
                time.sleep(0.3)
        subprocess.run(["wrk", "-t2", "-c8", "-d3s", "-s", str(script), url], env=wrk_env, capture_output=True, check=True)  # warm up
        server_cpu = cpu_seconds(server.pid)
        out = subprocess.run(
            ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", "--timeout", "10s", "-s", str(script), url],
            env=wrk_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        server_cpu = cpu_seconds(server.pid) - server_cpu
    finally:
        server.terminate()
        server.wait(15)
        script.unlink(missing_ok=True)
    figures = parse_wrk(out)
    served = int(out.split(" requests in")[0].split()[-1])
    return {
        "list_rps": figures["rps"],
        "list_p50_ms": figures["p50_ms"],
        "list_p99_ms": figures["p99_ms"],
        "list_errors": figures["errors"],
        "list_server_cpu_ms": 1000 * server_cpu / served,
    }


def profile_list(token: str, *, requests: int = 50) -> str:
    """Where a list request's time goes, in this process (Django's test client, no server)."""
    client = Client(SERVER_NAME="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {token}")
    for _ in range(5):
        client.get("/api/v1/sandboxes/")
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    for _ in range(requests):
        assert client.get("/api/v1/sandboxes/").status_code == 200
    profiler.disable()
    elapsed = (time.perf_counter() - t0) / requests * 1000
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
    return f"A list request in this process: {elapsed:.1f} ms (under the profiler)\n{out.getvalue()}"


def bench_create(team, user, token: str, *, creates: int, profile: bool) -> tuple[dict, str]:
    """(figures, the profile's text) of `creates` API creates and as many service calls, interleaved."""
    inputs = dict(image=TEST_IMAGE, memory_mb=256, cpus=Decimal("1"), network_mode="internet")
    client = Client(SERVER_NAME="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {token}")
    real_create = services.sandbox_create
    api_times, service_times = [], []
    api_cpu, service_cpu = [], []  # this process's CPU time: far less changed by other load on the machine
    profiler = cProfile.Profile()

    def api_create(name: str) -> float:
        body = {"team": team.pk, "name": name, "image": TEST_IMAGE, "memory_mb": 256, "cpus": "1", "network_mode": "internet"}
        t0, c0 = time.perf_counter(), time.process_time()
        answer = client.post("/api/v1/sandboxes/", body, content_type="application/json")
        elapsed = time.perf_counter() - t0
        api_cpu.append(time.process_time() - c0)
        assert answer.status_code == 202, answer.content
        return elapsed

    def service_create(name: str) -> float:
        t0, c0 = time.perf_counter(), time.process_time()
        real_create(actor=user, team=team, name=name, enqueue=False, **inputs)
        service_cpu.append(time.process_time() - c0)
        return time.perf_counter() - t0

    with engine.override(FakeEngine(images={TEST_IMAGE})):
        services.sandbox_create = functools.partial(real_create, enqueue=False)  # the API's call, with no queue
        try:
            for i in range(10):  # warm: imports, caches, the first queries' plans
                api_create(f"warm-api-{i}")
                service_create(f"warm-svc-{i}")
            api_cpu.clear()
            service_cpu.clear()
            for i in range(creates):
                api_times.append(api_create(f"api-{i:03d}"))
                service_times.append(service_create(f"svc-{i:03d}"))
            cpu_overhead = (statistics.median(api_cpu) - statistics.median(service_cpu)) * 1000
            if profile:  # after the timed runs: the profiler slows what it watches severalfold
                profiler.enable()
                for i in range(30):
                    api_create(f"profiled-{i:02d}")
                profiler.disable()
        finally:
            services.sandbox_create = real_create
    api_p50, service_p50 = statistics.median(api_times) * 1000, statistics.median(service_times) * 1000
    text = ""
    if profile:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(35)
        text = out.getvalue()
    figures = {"create_api_p50_ms": api_p50, "create_service_p50_ms": service_p50, "create_overhead_ms": api_p50 - service_p50}
    return {**figures, "create_overhead_cpu_ms": cpu_overhead}, text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--sandboxes", type=int, default=200)
    parser.add_argument("--creates", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="print where a list request's and an API create's time go (cProfile)")
    args = parser.parse_args()
    settings.SANDBOX_EGRESS_RULES = False  # the fake engine has no host firewall (as the fast tests)
    team, user, token = seed(args.sandboxes)
    figures = bench_list(token, sandboxes=args.sandboxes, seconds=args.seconds, clients=args.clients)
    list_profile = profile_list(token) if args.profile else ""
    try:
        created, profile = bench_create(team, user, token, creates=args.creates, profile=args.profile)
    finally:
        remove_own_test_resources(docker=False)  # the creates' workspace folders
    figures.update(created)
    workers = subprocess.run(
        [sys.executable, "-c", "exec(open('scripts/gunicorn.conf.py').read()); print(workers, threads)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average now (1, 5, 15 min): {load} on {os.cpu_count()} cores: other work on the machine lowers these figures")
    print(
        f"GET /api/v1/sandboxes/ with a token: {args.clients} connections, {args.seconds} s, {args.sandboxes} sandboxes "
        f"({settings.SANDBOX_PAGE_SIZE} a page), gunicorn {workers[0]} processes x {workers[1]} threads, {os.cpu_count()} cores "
        "(wrk on the same machine)"
    )
    print(
        f"requests/s {figures['list_rps']:.1f}   p50 {figures['list_p50_ms']:.1f} ms   p99 {figures['list_p99_ms']:.1f} ms   "
        f"errors {figures['list_errors']}   gunicorn CPU {figures['list_server_cpu_ms']:.2f} ms a request   "
        "(target: >= 300/s, p99 < 250 ms)"
    )
    print(
        f"create, p50 of {args.creates}: through the API {figures['create_api_p50_ms']:.1f} ms, the service alone "
        f"{figures['create_service_p50_ms']:.1f} ms: overhead {figures['create_overhead_ms']:.1f} ms (target < 20 ms); "
        f"in CPU time (p50s) {figures['create_overhead_cpu_ms']:.1f} ms"
    )
    if args.profile:
        print(list_profile)
        print(profile)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
