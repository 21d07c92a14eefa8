"""The storage pool's costs, in one run on a pool of the bench's own (issue 13, must-show 8).

A running sandbox (disk quota 4 GiB) holds 1 GB in 10,000 files of 100 KiB in Projects/, half
random bytes and half source-like text, written on the host and synced before anything is timed.

- checkpoint_ms: storage.services.checkpoint_create on the running sandbox (claim, docker
  pause, a read-only btrfs snapshot, unpause, the row, the audit event). The pause and a bare
  snapshot are timed apart too, to show which one the figure is made of.
- rollback_ms: storage.services.rollback to the first checkpoint (a checkpoint of the present,
  the container removed, the subvolume swapped, the container recreated and started).
- write_ratio: sequential (one 512 MiB file) and small-file (4,096 files of 16 KiB) writes into a
  fresh subvolume of the pool, in a quota group as a sandbox's, against a plain folder on the disk
  that holds the pool's loop file; each round ends with syncfs() and is timed with it, so the
  page cache does not decide it. Rounds interleave and alternate which side goes first; the
  median round counts. write_ratio is the lower of the two ratios; write_ratio_copy is the
  sequential write() calls alone (the copy into the page cache, before the syncfs).
- backup_ratio: a backup through the services a Back up click uses (backup_request,
  backup_perform: snapshot, then sha256 and gzip -6 on a thread per core) against
  `tar -C <subvolume> -cf - . | gzip -6` of the same data (the six folders and home/); the best
  of the runs on each side, tar_time / panel_time. tar reads the live subvolume, warmed first;
  the panel reads a new snapshot each time, whose files are new inodes to the page cache (their
  blocks come from the loop file's cache on the host).

The pool is made at start (STORAGE_POOL_SIZE_MB, 8 GiB by default here) under the test slot 43
and removed at the end with everything of that slot, whatever the outcome. The last line is a
JSON object.

Usage: .venv/bin/python bench/storage.py [--files 10000] [--checkpoints 11] [--rollbacks 5]
       [--rounds 5] [--backups 2]        (needs root, btrfs-progs, Docker; `make bench`)
"""

import argparse
import ctypes
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import time
from decimal import Decimal
from pathlib import Path

os.environ.setdefault("STORAGE_POOL_SIZE_MB", "8192")
# Every checkpoint the run takes is kept, so no rotation (a subvolume delete) is in the figures.
os.environ.setdefault("SANDBOX_KEEP_CHECKPOINTS", "100")

from _setup import VAR, corpus, remove_slot_and_pool, setup, started_sandbox, timed_backup, timed_tar

DB = setup("bench-storage.sqlite3", slot="43")

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from backups import services as backups  # noqa: E402
from backups.models import Backup  # noqa: E402
from sandboxes import engine, services  # noqa: E402
from sandboxes.models import Sandbox  # noqa: E402
from storage import pool, selectors  # noqa: E402
from storage import services as storage  # noqa: E402
from teams.models import Team  # noqa: E402

IMAGE = "ccpanel/test-busybox:latest"
ACTOR = services.SystemActor("bench")
PLAIN = VAR / f"bench-plain-{settings.PANEL_INSTANCE}"
TAR_OUT = VAR / f"bench-tar-{settings.PANEL_INSTANCE}.tar.gz"
MIB = 1 << 20
_libc = ctypes.CDLL(None, use_errno=True)


# --- figures -------------------------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    """The q-quantile by nearest rank (q=0.5: the median of an odd count)."""
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ms_line(label: str, xs: list[float]) -> str:
    return (
        f"{label:34} p50 {pct(xs, 0.5) * 1000:7.1f} ms   p90 {pct(xs, 0.9) * 1000:7.1f}   "
        f"min {min(xs) * 1000:7.1f}   max {max(xs) * 1000:7.1f}   (n={len(xs)})"
    )


# --- the data ------------------------------------------------------------------------------------


def fill(projects: Path, files: int, size: int) -> int:
    """`files` files of `size` bytes in Projects/data/dNN/, every other one random bytes, the
    rest text; owned by the sandbox's user; synced. Returns the bytes written."""
    rng = random.Random(43)
    text = corpus(8 * MIB, rng)
    for n in range(files):
        path = projects / "data" / f"d{n // 500:02}" / f"f{n:05}.{'bin' if n % 2 else 'txt'}"
        if n % 500 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        if n % 2:
            path.write_bytes(os.urandom(size))
        else:
            start = rng.randrange(len(text) - size)
            path.write_bytes(text[start : start + size])
    subprocess.run(["chown", "-R", "1000:1000", str(projects / "data")], check=True)
    os.sync()
    return files * size


def syncfs(folder: Path) -> None:
    """Write back the file system holding `folder`, and only that one."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed")
    finally:
        os.close(fd)


# --- checkpoints and rollback ----------------------------------------------------------------------


def fresh(sandbox: Sandbox) -> Sandbox:
    sandbox.refresh_from_db()
    return sandbox


def time_checkpoints(sandbox: Sandbox, runs: int) -> list[float]:
    storage.checkpoint_create(actor=ACTOR, sandbox=fresh(sandbox), label="warm-up")
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        storage.checkpoint_create(actor=ACTOR, sandbox=fresh(sandbox), label=f"bench {i}")
        times.append(time.perf_counter() - t0)
    return times


def time_parts(sandbox: Sandbox, runs: int) -> tuple[list[float], list[float]]:
    """What a checkpoint is made of: docker pause + unpause, and a bare read-only snapshot."""
    docker = engine.engine_for(sandbox)
    paused, snapped = [], []
    dest = settings.WORKSPACE_ROOT / pool.SNAPSHOTS / f"{sandbox.uuid}-bench"
    for _ in range(runs):
        t0 = time.perf_counter()
        docker.pause(sandbox.container_id)
        docker.unpause(sandbox.container_id)
        paused.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pool.snapshot(sandbox.workspace_path, dest, group=sandbox.disk_group, read_only=True)
        snapped.append(time.perf_counter() - t0)
        pool.delete(dest)
    return paused, snapped


def time_rollbacks(sandbox: Sandbox, runs: int) -> list[float]:
    """Roll back to the first checkpoint `runs` times; each time a marker file written after it
    must be gone and the container running again."""
    target = selectors.checkpoints_of(sandbox)[0].checkpoint
    docker = engine.engine_for(sandbox)
    times = []
    for i in range(runs):
        marker = fresh(sandbox).workspace_path / "Projects" / f"after-{i}"
        marker.write_text("written after the checkpoint\n")
        t0 = time.perf_counter()
        storage.rollback(actor=ACTOR, sandbox=sandbox, checkpoint=target)
        times.append(time.perf_counter() - t0)
        fresh(sandbox)
        state = docker.container_state(sandbox.container_id)
        if marker.exists() or sandbox.status != Sandbox.Status.RUNNING or state is None or state.status != "running":
            raise SystemExit(f"rollback {i} did not put the sandbox back: {sandbox.status} {state} marker={marker.exists()}")
    return times


# --- writes --------------------------------------------------------------------------------------


def write_seq(folder: Path, block: bytes, total: int) -> tuple[float, float]:
    """The whole write with its syncfs, and the part of it spent in write(): copying into the page
    cache is CPU work of the file system's own, apart from the flush to the disk."""
    t0 = time.perf_counter()
    with open(folder / "seq.bin", "wb", buffering=0) as fh:
        view = memoryview(block)
        for offset in range(0, total, MIB):
            at = offset % len(block)
            fh.write(view[at : at + MIB])
    copied = time.perf_counter() - t0
    syncfs(folder)
    return time.perf_counter() - t0, copied


def write_small(folder: Path, block: bytes, count: int, size: int) -> float:
    t0 = time.perf_counter()
    for n in range(count):
        sub = folder / f"s{n // 256:02}"
        if n % 256 == 0:
            sub.mkdir()
        at = (n * size) % (len(block) - size)
        with open(sub / f"f{n:05}", "wb", buffering=0) as fh:
            fh.write(block[at : at + size])
    syncfs(folder)
    return time.perf_counter() - t0


def empty(folder: Path) -> None:
    for entry in folder.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    syncfs(folder)


def time_writes(pooled: Path, plain: Path, rounds: int, seq_mb: int, small: int) -> dict[str, list[float]]:
    """MB/s per round and side; rounds alternate which side goes first."""
    block = os.urandom(64 * MIB)
    out: dict[str, list[float]] = {k: [] for k in ("seq_pool", "seq_plain", "copy_pool", "copy_plain", "small_pool", "small_plain")}
    for r in range(rounds + 1):  # the first round is a warm-up
        sides = [("pool", pooled), ("plain", plain)]
        for side, folder in sides if r % 2 else sides[::-1]:
            seq, copied = write_seq(folder, block, seq_mb * MIB)
            empty(folder)
            few = write_small(folder, block, small, 16 << 10)
            empty(folder)
            if r:
                out[f"seq_{side}"].append(seq_mb / seq)
                out[f"copy_{side}"].append(seq_mb / copied)
                out[f"small_{side}"].append(small * 16 / 1024 / few)
    return out


# --- backup --------------------------------------------------------------------------------------


def time_backups(sandbox: Sandbox, runs: int) -> tuple[list[float], list[float], Backup]:
    base = fresh(sandbox).workspace_path
    subprocess.run(f"tar -C {base} -cf - . > /dev/null", shell=True, check=True)  # warm the live files
    tar_times, panel_times = [], []
    for _ in range(runs):
        tar_times.append(timed_tar(base, ".", TAR_OUT, level=settings.BACKUP_COMPRESSION_LEVEL))
        elapsed, backup = timed_backup(ACTOR, fresh(sandbox))
        panel_times.append(elapsed)
        backups.backup_delete(actor=ACTOR, backup=backup)
        backup.path.unlink(missing_ok=True)
    return tar_times, panel_times, backup


# --- set-up and clean-up ---------------------------------------------------------------------------


def cleanup() -> None:
    """Everything of this slot and its pool (bench/_setup.py), and the plain folder and archive."""
    remove_slot_and_pool(PLAIN, TAR_OUT)


def loop_line() -> str:
    """How the pool's loop device passes writes on: a flush (syncfs, a btrfs commit) reaches the
    loop file's disk only if its queue says "write back"."""
    found = pool.mounted_at(settings.WORKSPACE_ROOT)
    dev = Path("/sys/block") / Path(found.source if found else "?").name
    read = {p: (dev / p).read_text().strip() if (dev / p).exists() else "?" for p in ("loop/dio", "queue/write_cache")}
    return f"pool device {found.source if found else '?'}: direct I/O {read['loop/dio']}, cache {read['queue/write_cache']}"


def large_folios_line() -> str:
    """Whether this kernel's btrfs may cache file data in large folios, as ext4 does: before 6.17
    it never does, in 6.17 and 6.18 only when built with CONFIG_BTRFS_EXPERIMENTAL. Without them
    every 4 KiB page of a write() costs btrfs its own reservation and extent locking, which is
    where a sequential write into the pool loses to the plain folder on the same disk."""
    try:
        config = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        return f"kernel {os.uname().release}, its config unreadable"
    on = "CONFIG_BTRFS_EXPERIMENTAL=y" in config.splitlines()
    return f"kernel {os.uname().release}, CONFIG_BTRFS_EXPERIMENTAL {'on' if on else 'off'}"


def usage_line(sandbox: Sandbox) -> str:
    used = selectors.disk_usage(fresh(sandbox))
    if used is None:
        return "disk usage: unknown (the quota group could not be read)"
    limit = f"{used.limit / MIB:.0f} MiB" if used.limit else "no limit"
    return f"disk usage (quota group {sandbox.disk_group}, {pool.quota_mode()}): {used.used / MIB:.0f} MiB of {limit}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--file-kb", type=int, default=100)
    parser.add_argument("--checkpoints", type=int, default=11)
    parser.add_argument("--rollbacks", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seq-mb", type=int, default=512)
    parser.add_argument("--small-files", type=int, default=4096)
    parser.add_argument("--backups", type=int, default=2)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    cleanup()
    print(pool.ensure())
    if not pool.active():
        raise SystemExit("the storage pool is not mounted")
    try:
        run(args)
    finally:
        for sandbox in Sandbox.objects.exclude(status=Sandbox.Status.DESTROYED):
            try:
                services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="destroy", enqueue=False)
                services.sandbox_perform(sandbox_id=sandbox.pk, action="destroy")
            except services.SandboxError as exc:
                print(f"destroy of {sandbox.name}: {exc}")
        cleanup()


def run(args) -> None:
    team = Team.objects.create(name="Bench", slug="bench")
    sandbox = started_sandbox(
        actor=ACTOR, team=team, name="bench-storage", image=IMAGE, memory_mb=256, cpus=Decimal("1"), network_mode="none", disk_mb=4096
    )
    if not sandbox.in_pool:
        raise SystemExit("the sandbox did not start in the pool")
    t0 = time.perf_counter()
    data = fill(sandbox.workspace_path / "Projects", args.files, args.file_kb << 10)
    print(f"workspace: {data / 1e9:.2f} GB in {args.files} files written and synced in {time.perf_counter() - t0:.1f} s")
    print(usage_line(sandbox))

    checkpoints = time_checkpoints(sandbox, args.checkpoints)
    paused, snapped = time_parts(fresh(sandbox), 5)
    print(ms_line("checkpoint_create (running)", checkpoints) + "   target p50 < 100")
    print(ms_line("  of it: docker pause + unpause", paused))
    print(ms_line("  of it: btrfs snapshot -r", snapped))
    rollbacks = time_rollbacks(sandbox, args.rollbacks)
    print(ms_line("rollback (recreate + start)", rollbacks) + "   target p50 < 1000")

    tar_times, panel_times, last = time_backups(sandbox, args.backups)
    for i, (t, p) in enumerate(zip(tar_times, panel_times, strict=True)):
        print(f"backup run {i + 1}: tar | gzip -{settings.BACKUP_COMPRESSION_LEVEL} {t:.1f} s, panel {p:.1f} s")
    backup_ratio = min(tar_times) / min(panel_times)
    print(
        f"backup: {last.data_bytes / 1e9:.2f} GB in {last.files} entries -> {last.size_bytes / 1e6:.0f} MB; "
        f"panel {last.data_bytes / 1e6 / min(panel_times):.0f} MB/s (gzip on {os.cpu_count()} threads), "
        f"tar | gzip {last.data_bytes / 1e6 / min(tar_times):.0f} MB/s; ratio {backup_ratio:.2f} (target >= 0.9)"
    )

    pooled = settings.WORKSPACE_ROOT / "bench-writes"
    pool.create_subvolume(pooled)
    pool.ensure_group(pooled, limit_mb=4096)
    PLAIN.mkdir(parents=True, exist_ok=True)
    print(loop_line())
    w = time_writes(pooled, PLAIN, args.rounds, args.seq_mb, args.small_files)
    seq_ratio = statistics.median(w["seq_pool"]) / statistics.median(w["seq_plain"])
    small_ratio = statistics.median(w["small_pool"]) / statistics.median(w["small_plain"])
    for kind, what in (("seq", f"one {args.seq_mb} MiB file"), ("small", f"{args.small_files} files of 16 KiB")):
        pooled_mb, plain_mb = statistics.median(w[f"{kind}_pool"]), statistics.median(w[f"{kind}_plain"])
        rounds = " ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(w[f"{kind}_pool"], w[f"{kind}_plain"], strict=True))
        print(f"writes, {what} + syncfs: pool {pooled_mb:.0f} MB/s, plain {plain_mb:.0f} MB/s (rounds pool/plain: {rounds})")
    copy_pool, copy_plain = statistics.median(w["copy_pool"]), statistics.median(w["copy_plain"])
    print(
        f"of which write() alone, into the page cache: pool {copy_pool:.0f} MB/s, plain {copy_plain:.0f} MB/s "
        f"(ratio {copy_pool / copy_plain:.2f}; {large_folios_line()})"
    )
    print(f"write ratio: sequential {seq_ratio:.2f}, small files {small_ratio:.2f} (target >= 0.9)")
    pool.delete(pooled)

    print(usage_line(sandbox) + f" (with {len(selectors.checkpoints_of(sandbox))} checkpoints)")
    print(
        json.dumps(
            {
                "checkpoint_ms": round(pct(checkpoints, 0.5) * 1000, 1),
                "checkpoint_ms_p90": round(pct(checkpoints, 0.9) * 1000, 1),
                "checkpoint_ms_max": round(max(checkpoints) * 1000, 1),
                "pause_unpause_ms": round(pct(paused, 0.5) * 1000, 1),
                "snapshot_ms": round(pct(snapped, 0.5) * 1000, 1),
                "rollback_ms": round(pct(rollbacks, 0.5) * 1000, 1),
                "write_ratio_seq": round(seq_ratio, 3),
                "write_ratio_small": round(small_ratio, 3),
                "write_ratio_copy": round(copy_pool / copy_plain, 3),
                "write_ratio": round(min(seq_ratio, small_ratio), 3),
                "backup_ratio": round(backup_ratio, 3),
                "data_gb": round(data / 1e9, 2),
                "files": args.files,
            }
        )
    )


if __name__ == "__main__":
    main()
