"""scripts/supervise.py on its own, with a Procfile of small shell commands (no services)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.waiting import wait_for


def procfile(tmp_path: Path, lines: dict[str, str]) -> Path:
    path = tmp_path / "Procfile"
    path.write_text("".join(f"{name}: {command}\n" for name, command in lines.items()))
    return path


def start(tmp_path: Path, lines: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts/supervise.py"), "--procfile", str(procfile(tmp_path, lines)), "--var", str(tmp_path / "var")],
        cwd=tmp_path,
        start_new_session=True,
        **kwargs,
    )


def pids_of(tmp_path: Path, marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def alive(pids: list[int]) -> list[int]:
    found = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            found.append(pid)
        except ProcessLookupError:
            pass
    return found


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGHUP])
def test_no_child_outlives_the_supervisor(tmp_path, how):
    marker = f"sleep 3{os.getpid() % 1000}{int(how)}1"
    proc = start(tmp_path, {"one": marker, "two": marker}, stdout=subprocess.DEVNULL)
    children = wait_for(lambda: len(pids_of(tmp_path, marker)) == 2 and pids_of(tmp_path, marker), timeout=10, what="children")
    os.kill(proc.pid, how)
    proc.wait(15)
    wait_for(lambda: not alive(children), timeout=10, what="the children to end with the supervisor")


def test_a_second_supervisor_in_the_same_folder_refuses(tmp_path):
    marker = f"sleep 4{os.getpid() % 1000}2"
    first = start(tmp_path, {"one": marker}, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: pids_of(tmp_path, marker), timeout=10, what="the first panel")
        second = start(tmp_path, {"one": marker}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = second.communicate(timeout=15)
        assert second.returncode == 3 and b"already running" in out
    finally:
        os.kill(first.pid, signal.SIGINT)
        first.wait(15)


def test_an_unread_terminal_never_blocks_the_panel(tmp_path):
    """A paused terminal (Ctrl-S) or a pipe nobody reads: the children go on, Ctrl-C still stops
    them, and the log file has every line."""
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opened, never read
    writer = os.open(fifo, os.O_WRONLY)
    counter = tmp_path / "count"
    chatty = f"sh -c 'i=0; while :; do i=$((i+1)); echo chatter-$i-{'x' * 200}; echo $i > {counter}.new; mv {counter}.new {counter}; done'"
    proc = start(tmp_path, {"chatty": chatty}, stdout=writer, stderr=writer)
    os.close(writer)
    try:

        def lines() -> int:
            text = counter.read_text().strip() if counter.exists() else ""
            return int(text) if text.isdigit() else 0

        # 700 lines of 200 bytes are twice what a pipe holds (64 KiB): past the point it would block
        wait_for(lambda: lines() > 700, timeout=20, what="700 lines of output")
        first = lines()
        time.sleep(1)
        assert lines() > first + 100  # still running, not blocked on the pipe
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(20)
        assert proc.returncode == 0
        assert "chatter-" in (tmp_path / "var" / "log" / "panel.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(reader)
