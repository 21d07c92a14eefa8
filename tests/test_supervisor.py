"""The panel keeps serving: under its real process manager (scripts/supervise.py running the
Procfile, as `make run` does), a killed worker comes back by itself while the pages keep
answering, and stopping the panel never stops a sandbox."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from sandboxes import services
from sandboxes.models import Sandbox
from tests.support.docker import docker_cli
from tests.support.paths import LOG_DIR, ROOT
from tests.support.processes import free_port, subprocess_env
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def running(container_id: str) -> bool:
    return docker_cli("inspect", "-f", "{{.State.Running}}", container_id, check=False).stdout.strip() == "true"


class Panel:
    """The panel under scripts/supervise.py, on free ports, against the test database and Redis."""

    def __init__(self):
        self.port, self.ws_port = free_port(), free_port()
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / "supervisor.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        env = subprocess_env(PANEL_PORT=str(self.port), PANEL_WS_PORT=str(self.ws_port), PANEL_WEB_WORKERS="2")
        self.proc = subprocess.Popen(
            [sys.executable, "scripts/supervise.py", "--skip", "redis", "--var", str(ROOT / "var" / "test-supervisor")],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def pids(self, name: str) -> list[int]:
        return [int(p) for p in re.findall(rf"{name}\s+\|\S* started with pid (\d+)", re.sub(r"\x1b\[[0-9;]*m", "", self.output()))]

    def page(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/login/", timeout=5) as response:
                return response.status
        except OSError:
            return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)  # what Ctrl-C sends
            self.proc.wait(30)
        self.log.close()


@pytest.fixture
def panel(clean_docker):
    p = Panel()
    try:
        wait_for(lambda: p.page() == 200, timeout=60, what="the panel's pages")
        wait_for(
            lambda: "lifecycle@" in p.output() and "jobs@" in p.output() and p.output().count("ready.") >= 2, timeout=60, what="the workers"
        )
        yield p
    finally:
        p.stop()


def test_a_killed_worker_comes_back_while_pages_answer_and_sandboxes_run(panel, make_sandbox):
    sandbox = make_sandbox("survivor")
    [worker_pid] = panel.pids("worker")
    os.kill(worker_pid, signal.SIGKILL)
    answers = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:  # the pages keep answering while the worker is gone
        answers.append(panel.page())
        time.sleep(0.2)
    assert set(answers) == {200}, answers
    wait_for(lambda: len(panel.pids("worker")) == 2, timeout=30, what="the worker to be started again")
    assert panel.pids("worker")[1] != worker_pid
    assert running(sandbox.container_id)
    # The new worker does the work: an action queued now is carried out.
    services.sandbox_request_action(actor=services.SystemActor("test"), sandbox=sandbox, action="pause")
    wait_for(lambda: Sandbox.objects.get(pk=sandbox.pk).status == "paused", timeout=60, what="the pause")
    assert "exited with -9" in re.sub(r"\x1b\[[0-9;]*m", "", panel.output())


def test_stopping_the_panel_leaves_sandboxes_running(panel, make_sandbox):
    sandbox = make_sandbox("outlives")
    pids = [pid for name in ("web", "ws", "worker", "beat", "events") for pid in panel.pids(name)]
    assert len(pids) == 5
    panel.stop()
    assert panel.proc.returncode == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "all panel processes stopped" in panel.output()
    assert running(sandbox.container_id)
