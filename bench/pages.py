"""The dashboard under load: 50 concurrent logged-in clients for 30 s, 20 sandboxes.

The panel is served exactly as `make run` serves it (gunicorn with scripts/gunicorn.conf.py),
on a free loopback port, with the test settings in a slot of their own (its own database, no
Docker needed: the dashboard reads only the database). The load comes from wrk, 50 connections,
each with the session cookie of its own user (bench/pages.lua). Prints requests per second and
p50/p99 latency, and the CPU time gunicorn (all its processes) and wrk spent per request, which
other load on the machine changes far less than the rate; the last line is a JSON object: rps,
p50_ms, p99_ms, errors, server_cpu_ms, wrk_cpu_ms (per request).

Usage: .venv/bin/python bench/pages.py [--seconds 30] [--clients 50] [--sandboxes 20]   (`make bench`)
"""

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request

from _setup import ROOT, VAR, cpu_seconds, free_port, parse_wrk, setup

DB = setup("bench-pages.sqlite3", slot="2")

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from sandboxes.models import Sandbox  # noqa: E402
from teams.models import Membership, Team  # noqa: E402


def seed(sandboxes: int, clients: int) -> list[str]:
    """The sandboxes (rows in mixed states) and one signed-in user per client; their cookies."""
    call_command("migrate", verbosity=0)
    team = Team.objects.get(slug="default")
    statuses = ["running", "stopped", "paused", "error", "running"]
    for i in range(sandboxes):
        Sandbox.objects.create(
            name=f"bench-{i:02d}",
            team=team,
            image="ccpanel/claude-code:latest",
            memory_mb=8192,
            cpus=2,
            pids_limit=1024,
            status=statuses[i % len(statuses)],
            status_detail="The container exited with code 3." if i % 5 == 3 else "",
        )
    cookies = []
    for i in range(clients):
        user = get_user_model().objects.create_user(f"bench{i}", password="bench-pass-123")
        Membership.objects.create(user=user, team=team, role="operator")
        client = Client(SERVER_NAME="127.0.0.1")
        client.force_login(user)
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}")
    return cookies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--sandboxes", type=int, default=20)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (apt-get install wrk; `make bench` installs it)")
    cookies = seed(args.sandboxes, args.clients)
    cookie_file = VAR / "bench-cookies.txt"
    cookie_file.write_text("\n".join(cookies) + "\n")
    port = free_port()
    env = dict(os.environ, PANEL_PORT=str(port))
    log = open(VAR / "log" / "bench-gunicorn.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "controlpanel.wsgi", "-c", str(ROOT / "scripts/gunicorn.conf.py")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 30
        while True:
            try:
                request = urllib.request.Request(url, headers={"Cookie": cookies[0]})
                with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - the bench's own http://127.0.0.1 server
                    body = response.read().decode()
                assert body.count('<tr id="sandbox-') == args.sandboxes, "the dashboard does not show the sandboxes"
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("gunicorn did not start; see var/log/bench-gunicorn.log") from None
                time.sleep(0.3)
        # Warm every worker process (templates, connections) before measuring.
        subprocess.run(
            ["wrk", "-t2", "-c8", "-d3s", "-s", str(ROOT / "bench/pages.lua"), url],
            env=dict(os.environ, COOKIES=str(cookie_file)),
            capture_output=True,
            check=True,
        )
        server_cpu = cpu_seconds(server.pid)
        wrk_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{args.clients}",
                f"-d{args.seconds}s",
                "--latency",
                "--timeout",
                "10s",
                "-s",
                str(ROOT / "bench/pages.lua"),
                url,
            ],
            env=dict(os.environ, COOKIES=str(cookie_file)),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        server_cpu = cpu_seconds(server.pid) - server_cpu
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_cpu = after.ru_utime + after.ru_stime - wrk_cpu.ru_utime - wrk_cpu.ru_stime
    finally:
        server.terminate()
        server.wait(15)
        cookie_file.unlink(missing_ok=True)
    figures = parse_wrk(out)
    served = int(re.search(r"(\d+) requests in", out).group(1))
    figures["server_cpu_ms"] = 1000 * server_cpu / served
    figures["wrk_cpu_ms"] = 1000 * wrk_cpu / served
    workers = subprocess.run(
        [sys.executable, "-c", "exec(open('scripts/gunicorn.conf.py').read()); print(workers, threads)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    print(
        f"{args.clients} logged-in clients, {args.seconds} s, {args.sandboxes} sandboxes on the dashboard, "
        f"gunicorn {workers[0]} processes x {workers[1]} threads, {os.cpu_count()} cores (wrk on the same machine)"
    )
    print(
        f"requests/s {figures['rps']:.1f}   p50 {figures['p50_ms']:.1f} ms   p99 {figures['p99_ms']:.1f} ms   "
        f"errors {figures['errors']}   (target: >= 300/s, p99 < 250 ms, no errors)"
    )
    print(
        f"CPU per request: gunicorn {figures['server_cpu_ms']:.2f} ms, wrk {figures['wrk_cpu_ms']:.2f} ms "
        f"({1000 / (figures['server_cpu_ms'] + figures['wrk_cpu_ms']):.0f} requests per CPU-second)"
    )
    print(json.dumps({k: round(v, 2 if k.endswith("cpu_ms") else 1) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
