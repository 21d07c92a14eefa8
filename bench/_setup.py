"""What every benchmark does first: the test settings with a slot of its own (instance label,
workspace root, network, subnet, Redis database), a fresh SQLite database in var/, and Django
set up. Never a running panel's or test run's resources. Imported, never run by `make bench`."""

import atexit
import io
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"


def setup(database: str, slot: str, url: str = "") -> Path:
    """Point Django at var/<database> (removed first), or at the database `url` (PostgreSQL, made
    by the caller), and the test slot `slot` unless PANEL_TEST_SLOT says otherwise; returns the
    SQLite database's path."""
    sys.path.insert(0, str(ROOT))
    db = VAR / database
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "controlpanel.settings.test",
            "PANEL_TEST_SLOT": os.environ.get("PANEL_TEST_SLOT", slot),
            "PANEL_TEST_DATABASE_URL": url or f"sqlite:///{db}",
        }
    )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    import django

    django.setup()
    return db


def own_egress_rules() -> None:
    """The host's egress rules for this slot's bridges (a sandbox on a network starts only with
    them), removed again when the bench exits, whatever its outcome: the machine as it was."""
    from django.core.management import call_command

    from sandboxes import network

    call_command("egress", "apply", stdout=io.StringIO())
    atexit.register(_remove_networks)
    atexit.register(network.remove)  # atexit runs the last registered first: the rules, then the networks


def _remove_networks() -> None:
    """This slot's Docker networks (and with them their bridges), as the test suite's end does."""
    from sandboxes import network

    for name in network.networks():
        subprocess.run(["docker", "network", "rm", name], capture_output=True, check=False)


def remove_slot_and_pool(*also: Path) -> None:
    """Everything of this slot: its containers and volumes (by its instance label), the pool's
    subvolumes and files, then the pool unmounted and its file removed, and `also` (files or
    folders of the bench's own); the pool's mount point goes when it is empty."""
    import shutil

    from django.conf import settings

    from storage import pool
    from tests.support.cleanup import remove_test_resources

    try:
        remove_test_resources(
            instance=settings.PANEL_INSTANCE,
            workspace_root=Path(settings.WORKSPACE_ROOT),
            mount_roots=[Path(r) for r in settings.SANDBOX_MOUNT_ROOTS],
            var_roots=(Path(settings.BACKUP_ROOT), Path(settings.EVIDENCE_ROOT)),
        )
    finally:
        pool.unmount()
        Path(settings.STORAGE_POOL_FILE).unlink(missing_ok=True)
        for path in also:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if Path(settings.WORKSPACE_ROOT).is_dir() and not any(Path(settings.WORKSPACE_ROOT).iterdir()):
            Path(settings.WORKSPACE_ROOT).rmdir()  # the pool's mount point


# Source-like text for the benchmarks' data (backup, storage).
WORDS = (
    "def class return import from self if else elif for while in not and or None True False value result data items "
    "config request response error message index count name path file open read write json yield async await const "
    "let var function export default module require string number object array length push map filter reduce"
).split()


def corpus(size: int, rng: random.Random) -> bytes:
    """Source-like text: identifiers, indentation, punctuation and numbers (compresses ~4x)."""
    parts, total = [], 0
    while total < size:
        line = "    " * rng.randrange(4) + " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 10)))
        line += rng.choice(["()", "(x)", " = 0", ": ", "[i]", " + 1", f" = {rng.randrange(10**6)}", ";", ""]) + "\n"
        parts.append(line)
        total += len(line)
    return "".join(parts).encode()[:size]


# What several benchmarks time or need, once Django is set up.


def started_sandbox(**create):
    """A sandbox made through the services (`create`: sandbox_create's arguments) and started,
    each task run here; SystemExit if it is not running after."""
    from sandboxes import services

    sandbox = services.sandbox_create(enqueue=False, **create)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    sandbox.refresh_from_db()
    if sandbox.status != sandbox.Status.RUNNING:
        raise SystemExit(f"{sandbox.name} did not start: {sandbox.status} {sandbox.status_detail}")
    return sandbox


def timed_backup(actor, sandbox):
    """(seconds, the backup) of one backup through the services a Back up click uses, run here
    (backup_request, backup_perform); SystemExit if it failed."""
    from backups import services as backups
    from backups.models import Backup

    t0 = time.perf_counter()
    backup = backups.backup_request(actor=actor, sandbox=sandbox, enqueue=False)
    backups.backup_perform(backup_id=backup.pk)
    elapsed = time.perf_counter() - t0
    backup.refresh_from_db()
    if backup.status != Backup.Status.DONE:
        raise SystemExit(f"the backup failed: {backup.detail}")
    return elapsed, backup


def timed_tar(base: Path, members: str, out: Path, *, level: int) -> float:
    """Seconds `tar -C base -cf - members | gzip -level > out` takes; `out` is removed after."""
    t0 = time.perf_counter()
    subprocess.run(f"tar -C {base} -cf - {members} | gzip -{level} > {out}", shell=True, check=True)
    elapsed = time.perf_counter() - t0
    out.unlink()
    return elapsed


# Serving the panel under load (bench/pages.py, bench/api.py).


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) of process `pid` and of its children still running (the
    gunicorn master and its workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def parse_wrk(out: str) -> dict:
    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    figures = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
        "p99_ms": ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
    }
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    figures["errors"] = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return figures
