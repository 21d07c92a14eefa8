#!/usr/bin/env python3
"""Run the panel's processes (Procfile) and keep them running.

    supervise.py [--procfile Procfile] [--skip NAME ...]

Each process runs in its own process group, its output prefixed with its name. One that exits
(a crash, an OOM kill) is started again after a pause that grows with repeated failures (1 s,
2 s, 4 s ... 30 s; back to 1 s once it has run for a minute), and its process group is cleaned
up first, so a dead Celery worker's pool children never linger. One process dying never stops
the others. SIGINT or SIGTERM stops them all (SIGTERM, then SIGKILL after 10 s) and exits.

Only the panel's own processes are here: dockerd and the sandboxes are not, so they outlive the
panel. Should the supervisor itself die (SIGKILL, the OOM killer), every child gets SIGTERM from
the kernel (PR_SET_PDEATHSIG): no orphan keeps a socket or a port. SIGHUP (the terminal closed)
stops everything like Ctrl-C. A lock in var/ keeps a second panel from starting in the same
folder. Output goes to var/log/panel.log, and to the terminal while it reads: a paused or gone
terminal never blocks the panel.
"""

import argparse
import ctypes
import fcntl
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0
COLOURS = [36, 33, 32, 35, 34, 31, 96, 93]
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, however it dies."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    command: str
    colour: int
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    buffer: bytes = field(default=b"")


def read_procfile(path: str, skip: set[str]) -> list[Child]:
    children = []
    with open(path) as lines:
        text = lines.read().splitlines()
    for line in text:
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line.strip())
        if match and match.group(1) not in skip:
            children.append(Child(match.group(1), match.group(2), COLOURS[len(children) % len(COLOURS)]))
    return children


class Supervisor:
    def __init__(self, children: list[Child], log_path: Path):
        self.children = children
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.width = max(len(c.name) for c in children)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(log_path, "a", buffering=1)  # noqa: SIM115 - the supervisor's lifetime
        os.set_blocking(sys.stdout.fileno(), False)
        self.dropped = 0

    def say(self, name: str, colour: int, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.log.write(f"{time.strftime('%Y-%m-%d')} {stamp} {name:<{self.width}} | {text}\n")
        line = f"\033[{colour}m{stamp} {name:<{self.width}} |\033[0m {text}\n".encode(errors="replace")
        try:
            if self.dropped:
                os.write(sys.stdout.fileno(), f"[{self.dropped} lines not shown here; see var/log/panel.log]\n".encode())
                self.dropped = 0
            os.write(sys.stdout.fileno(), line)
        except (BlockingIOError, BrokenPipeError, OSError):
            self.dropped += 1  # the terminal is not reading: the log file has it

    def start(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            ["bash", "-c", f"exec {child.command}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, before exec
        )
        child.started_at = time.monotonic()
        os.set_blocking(child.proc.stdout.fileno(), False)
        self.selector.register(child.proc.stdout, selectors.EVENT_READ, child)
        self.say(child.name, child.colour, f"started with pid {child.proc.pid}")

    def reap(self, child: Child) -> None:
        """The leader exited: clean up its group, then schedule a restart."""
        if child.proc is None:  # reaped already
            return
        code = child.proc.returncode
        self.drain(child)
        self.selector.unregister(child.proc.stdout)
        child.proc.stdout.close()
        try:
            os.killpg(child.proc.pid, signal.SIGKILL)  # pool children, helpers: nothing outlives its leader
        except ProcessLookupError:
            pass
        child.proc = None
        if self.stopping:
            return
        ran = time.monotonic() - child.started_at
        child.failures = 0 if ran >= HEALTHY_AFTER else child.failures + 1
        delay = min(BACKOFF_MAX, 2 ** max(0, child.failures - 1)) if child.failures else 1.0
        child.restart_at = time.monotonic() + delay
        self.say(child.name, child.colour, f"exited with {code} after {ran:.0f} s; restarting in {delay:.0f} s")

    def drain(self, child: Child) -> None:
        if child.proc is None:  # not running: nothing to read
            return
        try:
            data = child.proc.stdout.read() or b""
        except (BlockingIOError, ValueError):
            data = b""
        child.buffer += data
        *lines, child.buffer = child.buffer.split(b"\n")
        for line in lines:
            self.say(child.name, child.colour, line.decode(errors="replace").rstrip())

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.request_stop)
        for child in self.children:
            self.start(child)
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.5):
                self.drain(key.data)
            now = time.monotonic()
            for child in self.children:
                if child.proc is not None and child.proc.poll() is not None:
                    self.reap(child)
                elif child.proc is None and now >= child.restart_at:
                    self.start(child)
        return self.shutdown()

    def request_stop(self, signum, frame) -> None:
        self.stopping = True

    def shutdown(self) -> int:
        running = [c for c in self.children if c.proc is not None]
        for child in running:
            try:
                os.killpg(child.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(c.proc.poll() is None for c in running):
            for key, _ in self.selector.select(timeout=0.2):
                self.drain(key.data)
        for child in running:
            if child.proc.poll() is None:
                self.say(child.name, child.colour, "did not stop in 10 s; killing it")
            self.reap(child)
        print("all panel processes stopped (dockerd and the sandboxes keep running)", flush=True)
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procfile", default="Procfile")
    parser.add_argument("--skip", action="append", default=[], help="a process of the Procfile not to run")
    parser.add_argument("--var", default="var", help="the panel's own folder (lock and log)")
    args = parser.parse_args()
    children = read_procfile(args.procfile, set(args.skip))
    if not children:
        print(f"no processes in {args.procfile}", file=sys.stderr)
        return 2
    var = Path(args.var)
    var.mkdir(mode=0o700, exist_ok=True)
    lock = open(var / "panel.lock", "w")  # noqa: SIM115 - held until the supervisor exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"The panel is already running from this folder ({var / 'panel.lock'} is held); stop it first.", file=sys.stderr)
        return 3
    return Supervisor(children, var / "log" / "panel.log").run()


if __name__ == "__main__":
    sys.exit(main())
