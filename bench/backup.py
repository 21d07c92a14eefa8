"""Backup throughput against `tar czf` of the same data at the same gzip level, and the whole
incident flow on a 1 GB workspace, in one run.

The workspace is made to look like a real one: about 70% source-like text in many small files
(a repository, node_modules) and 30% data that does not compress (git packs, images, archives),
1 GB in all by default. Both sides read it from the page cache (a warm-up read first), and runs
alternate so drift on the machine affects both alike.

Panel: a backup through the service a Back up click queues (claim, the six folders read on the
host without following links, the home volume through a helper container, a sha256 of every
file, the manifest, gzip level 6 on a thread per core, an atomic rename). tar: `tar -cf - ... |
gzip -6` (what `tar czf` does) of the same six folders.
Incident: declare (pause), snapshot (image commit, backup, logs, inspect, diff, processes, files,
stats, evidence archive with its manifest), stop, reset (clean), close; each step as its task
runs it.

Usage: .venv/bin/python bench/backup.py [--mb 1024] [--runs 2]   (needs Docker; `make bench`)
"""

import argparse
import json
import os
import random
import subprocess
import time
from decimal import Decimal
from pathlib import Path

from _setup import corpus, own_egress_rules, setup, started_sandbox, timed_backup, timed_tar

DB = setup("bench-backup.sqlite3", slot="1")

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from backups import services as backups  # noqa: E402
from incidents import services as incidents  # noqa: E402
from incidents.models import Incident  # noqa: E402
from sandboxes import engine, services  # noqa: E402
from sandboxes.models import Sandbox  # noqa: E402
from teams.models import Team  # noqa: E402
from tests.support.cleanup import remove_own_test_resources as cleanup  # noqa: E402

IMAGE = "ccpanel/test-busybox:latest"
ACTOR = services.SystemActor("bench")
FOLDERS = ["Projects", "Documentation", "Research", "shared", "imports", "exports"]  # what tar reads


def make_workspace(base: Path, megabytes: int) -> int:
    """Fill the sandbox's folders; returns the bytes written."""
    rng = random.Random(42)
    text = corpus(8 << 20, rng)
    target, written, n = megabytes << 20, 0, 0
    text_share = int(target * 0.7)
    while written < text_share:
        size = rng.choice([2, 4, 8, 16, 32, 64, 128]) << 10
        start = rng.randrange(len(text) - size)
        folder = ("Projects/app/src", "Projects/app/node_modules/pkg", "Documentation", "Research")[n % 4]
        path = base / folder / f"d{n // 500}" / f"f{n}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text[start : start + size])
        written += size
        n += 1
    while written < target:
        size = min(rng.choice([8, 16, 32]) << 20, target - written)
        path = base / "Projects" / "app" / ".git" / "objects" / "pack" / f"pack-{n}.pack"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        written += size
        n += 1
    subprocess.run(["chown", "-R", "1000:1000", str(base)], check=True)
    return written


def warm(base: Path) -> None:
    subprocess.run(f"find {base} -type f -exec cat {{}} + > /dev/null", shell=True, check=True)


def incident_flow(sandbox: Sandbox) -> float:
    t0 = time.perf_counter()
    incident = incidents.incident_declare(actor=ACTOR, sandbox=sandbox, severity="high", summary="bench")
    incidents.incident_step_perform(incident_id=incident.pk)
    for step, extra in (("snapshot", {}), ("stop", {}), ("reset", {"reset_mode": "clean"})):
        incident.refresh_from_db()
        incidents.incident_advance(actor=ACTOR, incident=incident, step=step, enqueue=False, **extra)
        incidents.incident_step_perform(incident_id=incident.pk)
        incident.refresh_from_db()
        if incident.state != Incident.State.DONE:
            raise SystemExit(f"the incident's {step} failed: {incident.step_detail}")
    incidents.incident_close(actor=ACTOR, incident=incident, notes="", resolution="bench")
    elapsed = time.perf_counter() - t0
    engine.engine_for().docker.images.remove(incident.image_id, force=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1024, help="size of the workspace")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    own_egress_rules()
    cleanup()
    team = Team.objects.create(name="Bench", slug="bench")
    sandbox = started_sandbox(
        actor=ACTOR, team=team, name="bench-backup", image=IMAGE, memory_mb=512, cpus=Decimal("1"), network_mode="none"
    )
    try:
        base = sandbox.workspace_path
        t0 = time.perf_counter()
        data = make_workspace(base, args.mb)
        print(f"workspace: {data / 1e6:.0f} MB written in {time.perf_counter() - t0:.0f} s (70% source-like text, 30% incompressible)")
        warm(base)
        out = Path(settings.BACKUP_ROOT).parent / "bench-tar.tar.gz"
        tar_times, panel_times = [], []
        for run in range(args.runs):
            tar_times.append(timed_tar(base, " ".join(FOLDERS), out, level=6))
            elapsed, backup = timed_backup(ACTOR, sandbox)
            panel_times.append(elapsed)
            size = f"{backup.size_bytes / 1e6:.0f} MB, {backup.files} entries"
            print(f"run {run + 1}: tar czf {tar_times[-1]:.1f} s, panel {elapsed:.1f} s ({size})")
            backups.backup_delete(actor=ACTOR, backup=backup)
            backup.path.unlink(missing_ok=True)
        tar_mb_s = data / 1e6 / min(tar_times)
        panel_mb_s = data / 1e6 / min(panel_times)
        print(
            f"backup: panel {panel_mb_s:.0f} MB/s, tar czf (gzip -6) {tar_mb_s:.0f} MB/s, ratio {panel_mb_s / tar_mb_s:.2f} (target >= 0.9)"
        )
        sandbox.refresh_from_db()
        incident_s = incident_flow(sandbox)
        print(f"incident flow (declare, snapshot, stop, reset, close) on {data / 1e9:.2f} GB: {incident_s:.1f} s (target < 60 s)")
        print(
            json.dumps(
                {
                    "backup_mb_s": round(panel_mb_s, 1),
                    "tar_mb_s": round(tar_mb_s, 1),
                    "ratio": round(panel_mb_s / tar_mb_s, 2),
                    "incident_s": round(incident_s, 1),
                }
            )
        )
    finally:
        cleanup()


if __name__ == "__main__":
    main()
