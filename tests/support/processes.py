"""The processes tests start (a Celery worker, Daphne, the events watcher, the supervisor): on
the test database, their output in LOG_DIR."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from django.db import connection

from .paths import LOG_DIR, ROOT
from .waiting import wait_for

# Forks a fresh child and execs the command in it, then prints the child's peak RSS. A process
# started straight from pytest inherits pytest's high-water mark: subprocess uses vfork, and the
# kernel keeps the memory of the process before exec in ru_maxrss (signal->maxrss), so ru_maxrss
# would read the test run's size (200 MB and more late in a suite), not the command's.
_MEASURE = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_pid, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"exit": os.waitstatus_to_exitcode(status), "peak_kb": usage.ru_maxrss}, f)
"""


def run_measuring_peak_rss(cmd: list[str], result: Path, **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    """Runs `cmd` (its first item an absolute path) and returns it with its own peak RSS in MB."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(result), *cmd], **kwargs)
    measured = json.loads(result.read_text())
    return subprocess.CompletedProcess(cmd, measured["exit"], done.stdout, done.stderr), measured["peak_kb"] / 1024


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a process a test starts: the test settings, on the test database."""
    db = connection.settings_dict
    env = dict(os.environ, **extra)
    env["DJANGO_SETTINGS_MODULE"] = "controlpanel.settings.test"
    # The processes the tests start use the test database itself (settings.test reads this).
    if db["ENGINE"].endswith("sqlite3"):
        env["PANEL_TEST_DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        env["PANEL_TEST_DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    return env


class Proc:
    """A process a test started from the checkout, its output written to LOG_DIR/<name>.log."""

    def __init__(self, name: str, cmd: list[str], **env: str):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(**env), stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for_line(self, marker: str, *, timeout: float) -> None:
        """Wait until the process prints `marker`; fail with its output if it exits first."""
        wait_for(lambda: marker in self.output() or self.proc.poll() is not None, timeout=timeout, what=self.log_path.stem)
        assert self.proc.poll() is None, self.output()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def free_port() -> int:
    """A loopback port free now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The workers that tests of dying workers start: a stop takes up to 20 s (a container may ignore
# SIGTERM), the heartbeat is written every 0.5 s and a claim is stale after 3 s without one.
WORKER_ENV = {"SANDBOX_STOP_TIMEOUT": "20", "SANDBOX_HEARTBEAT_SECONDS": "0.5", "SANDBOX_STALE_SECONDS": "3"}


def start_worker(name: str, queue: str, **env: str) -> Proc:
    """A worker of its own (one process) reading only `queue`, with short heartbeats."""
    p = Proc(
        name,
        [str(ROOT / ".venv/bin/celery"), "-A", "controlpanel", "worker", "-l", "INFO", "-c", "1", "-n", f"{name}@%h", "-Q", queue],
        **{**WORKER_ENV, **env},
    )
    p.wait_for_line("ready.", timeout=60)
    return p


def kill_worker(p: Proc) -> None:
    """SIGKILL the worker and its pool children: a crash, not a shutdown."""
    children = subprocess.run(["pgrep", "-P", str(p.proc.pid)], capture_output=True, text=True, check=False).stdout.split()
    for pid in [p.proc.pid, *map(int, children)]:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.proc.wait(10)
    p.log.close()
