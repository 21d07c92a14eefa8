"""What gVisor costs: the same work in two sandboxes that differ only in their runtime (runc and
runsc), in one run.

Both are made by the panel's own services (sandbox_create, then a start), so each has the
hardened container every sandbox gets: read-only root, no capabilities, the panel's seccomp
profile, no-new-privileges, memory, CPU and process limits, its folders bind-mounted. They run
the panel's default image (its python3 runs the work), with no network.

- walk_ratio: 10,000 files of 100 bytes created in /workspace/Projects (the sandbox's own
  folder, bind-mounted from the host's disk), then walked: os.walk and a stat of every file.
  The walk's time, runsc / runc. Printed beside it: the creation's ratio (create_ratio, mostly
  the host's disk), and the same walk in /tmp (walk_tmp_ratio), the sandbox's in-memory folder,
  which gVisor serves from its own memory without asking the host.
- syscall_ratio: 200,000 getppid() calls from a Python loop, runsc / runc.
- start_ratio: the engine's start of the sandbox's stopped container (what `docker start`
  costs: the runtime's create and start), runsc / runc.

The work times itself inside the container, so docker exec's own cost is not in the first two.
Every round measures both sides, the order alternating; the first round is a warm-up and the
median of the others counts; the ratio of the best rounds is printed beside it (what gVisor
costs when a CPU is free for it at once), and the machine's load average: on a busy machine
gVisor's share grows with it. Targets: walk <= 1.0, syscalls <= 3.0, start <= 1.5. Where gVisor
is not registered with Docker (PANEL_GVISOR=1 sets it up), the run says so and ends. The last
line is a JSON object.

Usage: .venv/bin/python bench/isolation.py [--rounds 7] [--files 10000] [--calls 200000]
       (needs Docker, runsc registered, the panel's default image; `make bench`)
"""

import argparse
import json
import os
import statistics
import subprocess
import time
from decimal import Decimal

# Plain folders: the runtimes' difference, not the storage pool's, is what is measured here.
os.environ.setdefault("STORAGE_POOL", "none")

from _setup import setup

DB = setup("bench-isolation.sqlite3", slot="7")

from django.core.management import call_command  # noqa: E402

from sandboxes import engine, services  # noqa: E402
from sandboxes.models import Sandbox  # noqa: E402
from teams.models import Team  # noqa: E402
from tests.support.cleanup import remove_own_test_resources as cleanup  # noqa: E402

IMAGE = "ccpanel/claude-code:latest"  # the panel's default image: the one with python3
RUNTIMES = ("runc", "runsc")
TARGETS = {"walk_ratio": 1.0, "syscall_ratio": 3.0, "start_ratio": 1.5}
ACTOR = services.SystemActor("bench")

# Run in the sandbox as `python3 -c WORK files N FOLDER` or `python3 -c WORK calls N`; prints
# seconds (files: the creation's, then the walk's).
WORK = r"""
import os, shutil, sys, time
what, n = sys.argv[1], int(sys.argv[2])
if what == "files":
    base = sys.argv[3] + "/bench-files"
    shutil.rmtree(base, ignore_errors=True)
    t0 = time.perf_counter()
    for i in range(n):
        folder = f"{base}/d{i // 500:03}"
        if i % 500 == 0:
            os.makedirs(folder)
        with open(f"{folder}/f{i:05}.txt", "w") as fh:
            fh.write("x" * 100)
    t1 = time.perf_counter()
    seen = 0
    for root, dirs, files in os.walk(base):
        for name in files:
            os.stat(os.path.join(root, name))
            seen += 1
    t2 = time.perf_counter()
    assert seen == n, seen
    shutil.rmtree(base)
    print(t1 - t0, t2 - t1)
else:
    getppid = os.getppid
    t0 = time.perf_counter()
    for _ in range(n):
        getppid()
    print(time.perf_counter() - t0)
"""


def run_work(container_id: str, *args: str) -> list[float]:
    code, out = engine.engine_for().exec_run(container_id, ["python3", "-c", WORK, *args])
    if code != 0:
        raise SystemExit(f"the work failed in {container_id[:12]} (exit {code}): {out.strip()[-500:]}")
    return [float(x) for x in out.split()]


def time_start(container_id: str) -> float:
    docker = engine.engine_for()
    docker.stop(container_id, timeout=10)
    t0 = time.perf_counter()
    docker.start(container_id)
    return time.perf_counter() - t0


def measure(sandboxes: dict[str, Sandbox], rounds: int, files: int, calls: int) -> dict[str, dict[str, list[float]]]:
    """{measure: {runtime: [seconds per round]}}, the warm-up round left out."""
    kinds = ("create", "walk", "walk_tmp", "syscalls", "start")
    out: dict[str, dict[str, list[float]]] = {m: {r: [] for r in RUNTIMES} for m in kinds}
    for r in range(rounds + 1):
        order = RUNTIMES if r % 2 else RUNTIMES[::-1]
        for runtime in order:
            cid = sandboxes[runtime].container_id
            create, walk = run_work(cid, "files", str(files), "/workspace/Projects")
            _, walk_tmp = run_work(cid, "files", str(files), "/tmp")
            (syscalls,) = run_work(cid, "calls", str(calls))
            start = time_start(cid)
            if r:
                for key, value in zip(kinds, (create, walk, walk_tmp, syscalls, start), strict=True):
                    out[key][runtime].append(value)
    return out


def runsc_line() -> str:
    """Which runsc Docker runs, and with which arguments."""
    try:
        version = subprocess.run(["runsc", "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        version = "runsc: no version (not on PATH?)"
    runtimes = subprocess.run(["docker", "info", "--format", "{{json .Runtimes.runsc}}"], capture_output=True, text=True, timeout=30)
    return f"{version}; Docker: {runtimes.stdout.strip() or runtimes.stderr.strip()}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    docker = engine.engine_for()
    if "runsc" not in docker.runtimes() or not docker.image_exists(IMAGE):
        why = "gVisor (runsc) is not registered with Docker" if "runsc" not in docker.runtimes() else f"{IMAGE} is not built"
        print(f"skipped: {why} (PANEL_GVISOR=1 bash scripts/panel.sh run sets both up)")
        print(json.dumps({"skipped": why}))
        return
    call_command("migrate", verbosity=0)
    cleanup()
    try:
        team = Team.objects.create(name="Bench", slug="bench")
        sandboxes = {}
        for runtime in RUNTIMES:
            sandbox = services.sandbox_create(
                actor=ACTOR,
                team=team,
                name=f"bench-{runtime}",
                image=IMAGE,
                memory_mb=1024,
                cpus=Decimal("1"),
                network_mode="none",
                runtime=runtime,
                enqueue=False,
            )
            services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
            sandbox.refresh_from_db()
            if sandbox.status != Sandbox.Status.RUNNING:
                raise SystemExit(f"the {runtime} sandbox did not start: {sandbox.status_detail}")
            sandboxes[runtime] = sandbox
        print(runsc_line())
        load_before = os.getloadavg()[0]
        times = measure(sandboxes, args.rounds, args.files, args.calls)
        load_after = os.getloadavg()[0]
    finally:
        cleanup()

    report(times, args, load=(load_before, load_after))


def report(times: dict[str, dict[str, list[float]]], args, *, load: tuple[float, float]) -> None:
    """Medians per side and their ratio (runsc / runc), the figure with its target; beside it the
    ratio of the best rounds, what gVisor costs when a CPU is free for it at once."""
    labels = {
        "walk": (f"walk {args.files} files (+stat)", "walk_ratio"),
        "syscalls": (f"{args.calls} getppid() calls", "syscall_ratio"),
        "start": ("start (stopped container)", "start_ratio"),
        "create": (f"create {args.files} files", "create_ratio"),
        "walk_tmp": (f"walk {args.files} files in /tmp", "walk_tmp_ratio"),
    }
    # gVisor's systrap platform hands each system call between threads: on a busy machine the
    # waits for a CPU show in its figures far more than in runc's. The load says how busy it was.
    print(f"rounds: {args.rounds} (after 1 warm-up), image {IMAGE}; load average {load[0]:.1f} -> {load[1]:.1f}")
    result: dict[str, float] = {}
    for key, (label, name) in labels.items():
        runc, runsc = times[key]["runc"], times[key]["runsc"]
        ratio = statistics.median(runsc) / statistics.median(runc)
        best = min(runsc) / min(runc)
        target = f" (target <= {TARGETS[name]:g})" if name in TARGETS else ""
        print(
            f"{label:30} median runc {statistics.median(runc) * 1000:8.1f} ms, runsc {statistics.median(runsc) * 1000:8.1f} ms: "
            f"{name} {ratio:6.2f}{target}; best rounds {best:.2f}"
        )
        result[name] = round(ratio, 3)
        result[f"{name}_best"] = round(best, 3)
        for runtime in RUNTIMES:
            result[f"{key}_ms_{runtime}"] = round(statistics.median(times[key][runtime]) * 1000, 1)
    result.update({"rounds": args.rounds, "files": args.files, "calls": args.calls, "load": round(max(load), 1)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
