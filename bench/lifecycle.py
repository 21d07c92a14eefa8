"""Create-to-running and start-of-a-stopped-sandbox latency: the panel against the raw Docker
SDK, in one run.

Create. Panel: a POST to /sandboxes/new/ through Django's request stack, the Celery task on a
real worker (prefork, as `make run` starts it), until the database says "running". SDK: the same
Docker work done directly (workspace folders, home volume, hardened container, start).
Start. Panel: a POST to /sandboxes/<pk>/start/ of a stopped sandbox, including what every start
costs now (each folder judged on disk, component by component, against its recorded device and
inode; the container compared with the saved settings). SDK: `container.start()`.
Runs are interleaved so drift on the machine affects both alike. The last line is a JSON object.

Usage: .venv/bin/python bench/lifecycle.py [--runs N]   (needs Docker and Redis; `make bench`)
"""

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from _setup import ROOT, VAR, own_egress_rules, setup

# Plain folders, as the raw SDK side makes (a storage pool's subvolume and quota group would be
# work the other side does not do; bench/storage.py measures the pool).
os.environ.setdefault("STORAGE_POOL", "none")
DB = setup("bench.sqlite3", slot="1")

import django  # noqa: E402
import docker  # noqa: E402  - the raw SDK side of the comparison
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from hosts.queues import worker_queues  # noqa: E402
from sandboxes import seccomp, services  # noqa: E402
from sandboxes.models import Sandbox  # noqa: E402
from teams.models import Membership, Team  # noqa: E402

IMAGE = "ccpanel/test-busybox:latest"
FOLDERS = ["Projects", "Documentation", "Research", "shared", "imports", "exports"]


def wait_running(name: str, poll: float) -> int:
    """Read the sandbox's row every `poll` seconds until it says "running" (SQLite tells no one
    of a commit: a poll it is). One plain SELECT, some tens of microseconds, so that a short
    interval costs the machine little; the interval adds about half itself to the figure."""
    sql = f"SELECT status, pending_action, status_detail, id FROM {Sandbox._meta.db_table} WHERE name = %s"  # noqa: S608 - the model's own table; the name is bound
    with connection.cursor() as cursor:
        while True:
            cursor.execute(sql, [name])
            status, pending, detail, pk = cursor.fetchone()
            if status == "running" and not pending:
                return pk
            if status == "error":
                raise SystemExit(f"panel action failed: {detail}")
            time.sleep(poll)


def panel_once(client: Client, team: Team, name: str, poll: float) -> tuple[float, float]:
    # What the events watcher does within a second of a change: Docker (making or removing any
    # network on this machine) may put its own rule before ours, and a start fails closed then.
    call_command("egress", "apply", stdout=io.StringIO())
    form = {"name": name, "team": team.pk, "image": IMAGE, "memory_mb": 256, "cpus": "1", "network_mode": "internet"}
    t0 = time.perf_counter()
    response = client.post("/sandboxes/new/", form)
    assert response.status_code == 302, response.content
    pk = wait_running(name, poll)
    created = time.perf_counter() - t0
    actor = services.SystemActor("bench")
    services.sandbox_request_action(actor=actor, sandbox=Sandbox.objects.get(pk=pk), action="stop", enqueue=False)
    services.sandbox_perform(sandbox_id=pk, action="stop")
    t0 = time.perf_counter()
    response = client.post(f"/sandboxes/{pk}/start/")
    assert response.status_code == 302, response.content
    wait_running(name, poll)
    started = time.perf_counter() - t0
    services.sandbox_request_action(actor=actor, sandbox=Sandbox.objects.get(pk=pk), action="destroy", enqueue=False)
    services.sandbox_perform(sandbox_id=pk, action="destroy")
    return created, started


def sdk_once(sdk: docker.DockerClient, name: str) -> tuple[float, float]:
    base = Path(settings.WORKSPACE_ROOT) / name
    t0 = time.perf_counter()
    for folder in FOLDERS:
        (base / folder).mkdir(parents=True, exist_ok=True)
        os.chown(base / folder, 1000, 1000)
    sdk.volumes.create(f"{name}-home")
    mounts = [docker.types.Mount(f"/workspace/{f}", str(base / f), type="bind", read_only=f == "imports") for f in FOLDERS]
    mounts.append(docker.types.Mount("/home/claude", f"{name}-home", type="volume"))
    container = sdk.containers.create(
        IMAGE,
        name=name,
        user="1000:1000",
        mem_limit=256 << 20,
        memswap_limit=256 << 20,
        nano_cpus=10**9,
        pids_limit=1024,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true", seccomp.option()],  # what the panel gives a sandbox
        network=settings.SANDBOX_NETWORK,
        mounts=mounts,
        labels={"io.ccpanel.instance": settings.PANEL_INSTANCE},
        # What the panel's sandbox gets too (CIS 5.13, 5.19): the same Docker work on both sides.
        read_only=True,
        tmpfs={
            "/tmp": "rw,nosuid,nodev,size=268435456",
            "/var/tmp": "rw,nosuid,nodev,size=268435456",
            "/run/secrets": "rw,nosuid,nodev,size=4194304,noexec,mode=0700,uid=1000,gid=1000",
        },
        ulimits=[
            docker.types.Ulimit(name="nofile", soft=settings.SANDBOX_NOFILE, hard=settings.SANDBOX_NOFILE),
            docker.types.Ulimit(name="nproc", soft=settings.SANDBOX_NPROC, hard=settings.SANDBOX_NPROC),
        ],
        tty=True,
        stdin_open=True,
        detach=True,
    )
    container.start()
    created = time.perf_counter() - t0
    container.stop(timeout=10)
    t0 = time.perf_counter()
    container.start()
    started = time.perf_counter() - t0
    container.remove(force=True)
    sdk.volumes.get(f"{name}-home").remove(force=True)
    shutil.rmtree(base)
    return created, started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    # How often the bench reads the database for "running" (see wait_running).
    parser.add_argument("--poll-ms", type=float, default=1.0)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    own_egress_rules()
    team = Team.objects.create(name="Bench", slug="bench")
    user = django.contrib.auth.get_user_model().objects.create_superuser("bench", "", "bench-pass-123")
    Membership.objects.create(user=user, team=team, role="admin")
    client = Client(SERVER_NAME="127.0.0.1")
    client.force_login(user)
    sdk = docker.from_env()
    log = open(VAR / "log" / "bench-worker.log", "w")  # noqa: SIM115
    worker = subprocess.Popen(
        # The lifecycle worker of the Procfile: its queues are this machine's hosts' (a worker without -Q
        # read only Celery's default queue, and the bench waited for ever on a sandbox "creating").
        [
            str(ROOT / ".venv/bin/celery"),
            "-A",
            "controlpanel",
            "worker",
            "-l",
            "INFO",
            "-c",
            "2",
            "-Q",
            ",".join(worker_queues("lifecycle")),
        ],
        cwd=ROOT,
        env=dict(os.environ, PANEL_DB_CONN_MAX_AGE="600"),  # as the Procfile starts the worker
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 60
        while "ready." not in (VAR / "log" / "bench-worker.log").read_text():
            if time.time() > deadline or worker.poll() is not None:
                raise SystemExit("the Celery worker did not start; see var/log/bench-worker.log")
            time.sleep(0.2)
        panel, sdk_times, panel_start, sdk_start = [], [], [], []
        for i in range(args.runs + 2):  # the first two of each are warm-up
            p, ps = panel_once(client, team, f"bench-p{i}", args.poll_ms / 1000)
            s, ss = sdk_once(sdk, f"ccpanel-{settings.PANEL_INSTANCE}-raw{i}")
            if i >= 2:
                panel.append(p)
                sdk_times.append(s)
                panel_start.append(ps)
                sdk_start.append(ss)
    finally:
        worker.terminate()
        worker.wait(10)

    def p50(xs: list[float]) -> float:
        return statistics.median(xs) * 1000

    def line(label: str, xs: list[float]) -> str:
        return f"{label:24} p50 {p50(xs):7.1f} ms   min {min(xs) * 1000:7.1f}   max {max(xs) * 1000:7.1f}"

    print(f"runs: {args.runs} (after 2 warm-up), image {IMAGE}, panel polled every {args.poll_ms:g} ms")
    print(line("panel create->running", panel))
    print(line("raw SDK create+start", sdk_times))
    print(f"ratio {p50(panel) / p50(sdk_times):.3f} (target < 1.15)")
    print(line("panel start (stopped)", panel_start))
    print(line("raw SDK start (stopped)", sdk_start))
    print(f"start ratio {p50(panel_start) / p50(sdk_start):.3f} (target < 1.15, start-time checks included)")
    print(
        json.dumps(
            {
                "panel_ms_p50": round(p50(panel), 1),
                "sdk_ms_p50": round(p50(sdk_times), 1),
                "ratio": round(p50(panel) / p50(sdk_times), 3),
                "start_panel_ms_p50": round(p50(panel_start), 1),
                "start_sdk_ms_p50": round(p50(sdk_start), 1),
                "start_ratio": round(p50(panel_start) / p50(sdk_start), 3),
                "runs": args.runs,
                "poll_ms": args.poll_ms,
            }
        )
    )


if __name__ == "__main__":
    main()
