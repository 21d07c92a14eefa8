"""Two hosts behind one panel, end to end on this machine: the panel (its database on the tests'
PostgreSQL, its Redis the second host's TLS one, its lifecycle worker on this machine's engine)
and a second host (tests/support/second_host.py: a network namespace with its own dockerd,
firewall, workspace root and pool) that joins with a token over the namespace's link and runs
the host agent inside it. A sandbox is placed on each host; each one's work runs on its own
host's worker; the second host's egress rules hold there; its logs, stats and terminal reach the
panel through its engine's TLS endpoint; its engine stopped makes its sandboxes unreachable while
the first host is served, and started again they recover.

Everything of the panel runs as subprocesses (`manage.py`), on a database of the test's own, as
tests/hosts/test_join_postgres.py does: the suite itself may run on SQLite."""

import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.hosts.test_join_postgres import as_postgres
from tests.support.docker import TEST_IMAGE
from tests.support.paths import ROOT
from tests.support.processes import subprocess_env

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

SHELL_STATE = """
import json
from sandboxes.models import Sandbox
from hosts.models import Host
from hosts.health import unreachable_reason
print(json.dumps({
    "sandboxes": {s.name: {"status": s.status, "detail": s.status_detail, "host": s.host.name, "container": s.container_id,
                           "pending": s.pending_action} for s in Sandbox.objects.select_related("host")},
    "hosts": {h.name: {"agent": h.agent, "unreachable": unreachable_reason(h), "version": h.engine_version}
              for h in Host.objects.all()},
}))
"""

SHELL_STREAMS = """
import json, time
from sandboxes import engine
from sandboxes.models import Sandbox
box = Sandbox.objects.select_related("host").get(name="far-box")
docker = engine.engine_for(box)
seen = b""
terminal = docker.open_terminal(box.container_id, user="1000:1000", workdir="/", cmd=["sh"], env={})
terminal.send(b"echo $((6*7))-typed; echo marker-in-log > /proc/1/fd/1\\n")
deadline = time.monotonic() + 10
while b"42-typed" not in seen and time.monotonic() < deadline:
    seen += terminal.read()
terminal.send(b"sleep 600\\n")
time.sleep(0.5)
terminal.close()
time.sleep(1)
# Docker keeps the shell running after its client went; the page's close hangs it up, here by
# the host's agent (the engine is another machine's: its processes are not ours to signal).
left_running = docker.terminal_running(terminal.exec_id)
from sandboxes.services import terminals
terminals.end_shell(sandbox=box, exec_id=terminal.exec_id)
deadline = time.monotonic() + 20
while docker.terminal_running(terminal.exec_id) and time.monotonic() < deadline:
    time.sleep(0.2)
print(json.dumps({"url": docker.host.base_url, "typed": "42-typed" in seen.decode(errors="replace"),
                  "logs": docker.logs(box.container_id), "memory": docker.stats_once(box.container_id)["memory_stats"].get("usage", 0),
                  "left_running": left_running, "hung_up": not docker.terminal_running(terminal.exec_id)}))
"""


def run(cmd: list[str], env: dict, *, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def manage(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run([sys.executable, "manage.py", *args], env, timeout=timeout)


def shell(env: dict, code: str) -> dict:
    done = manage(env, "shell", "-c", code)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait(predicate, *, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def panel(second_host, postgres_cluster, tmp_path):
    """The panel's database (a role and database of the test's own), its environment: the second
    host's Redis (TLS, a password) as its broker, the agents' URLs set, the TLS files for the
    second host's engine."""
    port = urlsplit(postgres_cluster).port or 5432
    name, password = f"ccpanel_hosts_{secrets.token_hex(6)}", secrets.token_hex(16)
    as_postgres(port, f"CREATE ROLE {name} LOGIN PASSWORD '{password}';\nCREATE DATABASE {name} OWNER {name};")
    url = f"postgres://{name}:{password}@127.0.0.1:{port}/{name}"
    tls = tmp_path / "hosts"
    shutil.copytree(second_host.docker_client_certs, tls / "far")
    (tls / "far" / "key.pem").chmod(0o600)
    env = subprocess_env()
    for key in ("PANEL_HOST", "PANEL_HOST_AGENT", "DOCKER_HOST", "PANEL_TEST_KEEP"):
        env.pop(key, None)
    env.update(
        PANEL_TEST_DATABASE_URL=url,
        PANEL_VAR_DIR=str(tmp_path / "panel-var"),
        REDIS_URL=second_host.redis_url,
        PANEL_AGENT_REDIS_URL=second_host.redis_url,
        PANEL_AGENT_DATABASE_URL=second_host.database_url_from_inside(name, name, password),
        HOSTS_TLS_DIR=str(tls),
        WARM_POOL="",
    )
    try:
        done = manage(env, "migrate", "-v", "0")
        assert done.returncode == 0, done.stderr[-3000:]
        shell(env, "from teams.models import Team; Team.objects.get_or_create(slug='default', defaults={'name': 'Default'}); print('{}')")
        yield env
    finally:
        as_postgres(port, f"DROP DATABASE IF EXISTS {name} WITH (FORCE);\nDROP ROLE IF EXISTS {name};")


def test_two_hosts_behind_one_panel(second_host, panel, tmp_path):
    h2 = second_host
    # The token, made as the Hosts page makes it (a superuser), then the join inside the second host.
    made = shell(panel, "from tests.support.join_flow import page_token; page_token('far')")
    assert made["status"] == 200 and made["token"], made
    agent_env = dict(panel)
    agent_env.update(
        PANEL_VAR_DIR=str(tmp_path / "agent-var"),
        PANEL_TEST_DATABASE_URL=panel["PANEL_AGENT_DATABASE_URL"],
        DOCKER_HOST=h2.docker_url,
        DOCKER_LOCAL_SOCKET=str(urlsplit(h2.docker_url).path),
        WORKSPACE_ROOT=str(h2.workspace_root),
        STORAGE_POOL_FILE=str(h2.pool_file),
        PANEL_TEST_KEEP="WORKSPACE_ROOT,STORAGE_POOL_FILE",
    )
    for key in ("PANEL_AGENT_REDIS_URL", "PANEL_AGENT_DATABASE_URL", "HOSTS_TLS_DIR"):
        agent_env.pop(key)
    joined = h2.run(
        sys.executable, "manage.py", "host", "join", made["token"], "--panel-url", h2.docker_tls_url, env=agent_env, timeout=120
    )
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert shell(panel, SHELL_STATE)["hosts"]["far"]["agent"] is True

    logs = tmp_path / "logs"
    logs.mkdir()
    agent = panel_worker = None
    try:
        # The host agent inside the second host (its workers on its own queues, its watcher), and
        # the panel's lifecycle worker on this machine (the default queue and "local"'s).
        agent = h2.popen(
            [sys.executable, "manage.py", "host", "agent"],
            cwd=ROOT,
            env=agent_env,
            stdout=open(logs / "agent.log", "w"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
        )
        queues = manage(panel, "host", "queues", "lifecycle").stdout.strip()
        assert "host-far" not in queues and "host-local" in queues, queues
        panel_worker = subprocess.Popen(
            [str(ROOT / ".venv/bin/celery"), "-A", "controlpanel", "worker", "-l", "INFO", "-c", "1", "-n", "panel@%h", "-Q", queues],
            cwd=ROOT,
            env=panel,
            stdout=open(logs / "panel-worker.log", "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait(
            lambda: shell(panel, SHELL_STATE)["hosts"]["far"]["version"],
            timeout=90,
            what="the agent's heartbeat:\n" + _tail(logs / "agent.log"),
        )

        # One sandbox on each host, created on the panel, each started by its own host's worker.
        for name, host in (("near-box", "local"), ("far-box", "far")):
            done = manage(panel, "sandbox", "create", name, "--team", "default", "--host", host, "--memory-mb", "256", "--cpus", "1")
            assert done.returncode == 0, done.stdout + done.stderr

        def both_running():
            boxes = shell(panel, SHELL_STATE)["sandboxes"]
            errors = {n: b["detail"] for n, b in boxes.items() if b["status"] == "error"}
            assert not errors, f"{errors}\n{_tail(logs / 'agent.log')}"
            return boxes if all(b["status"] == "running" and not b["pending"] for b in boxes.values()) else None

        boxes = wait(both_running, timeout=180, what="both sandboxes running")
        assert boxes["near-box"]["host"] == "local" and boxes["far-box"]["host"] == "far"
        # Each container is on its own host's engine only (the panel's worker cannot reach the
        # second engine: the agent made it; the agent cannot reach this one's).
        far_id, near_id = boxes["far-box"]["container"], boxes["near-box"]["container"]
        assert h2.docker("inspect", far_id, check=False).returncode == 0
        assert subprocess.run(["docker", "inspect", far_id], capture_output=True).returncode != 0
        assert h2.docker("inspect", near_id, check=False).returncode != 0
        assert subprocess.run(["docker", "inspect", near_id], capture_output=True).returncode == 0
        mounts = json.loads(h2.docker("inspect", far_id).stdout)[0]["Mounts"]
        assert any(m.get("Source", "").startswith(str(h2.workspace_root)) for m in mounts), mounts

        # The second host's egress rules, applied there by its agent: the internet, not its host.
        def fetch(address: str, port: int) -> str:
            # busybox's wget crashes with -T here: `timeout` bounds it instead
            done = h2.docker("exec", far_id, "timeout", "3", "wget", "-q", "-O-", f"http://{address}:{port}/", check=False)
            return done.stdout if done.returncode == 0 else ""

        try:
            reached = wait(lambda: fetch(h2.internet, h2.internet_port), timeout=30, what="the internet from far-box")
        except AssertionError:
            tried = h2.docker("exec", far_id, "timeout", "3", "wget", "-O-", f"http://{h2.internet}:{h2.internet_port}/", check=False)
            rules = _why_no_internet(h2)
            raise AssertionError(f"{tried.stderr}\n{rules}\n{_tail(logs / 'agent.log')}") from None
        assert h2.internet_body in reached
        assert fetch(h2.host_address, h2.internet_port) == "" and fetch(h2.root_address, 22) == ""

        # Its logs, stats and a terminal, from the panel, through the engine's TLS endpoint.
        streams = shell(panel, SHELL_STREAMS)
        assert streams["url"] == h2.docker_tls_url
        assert streams["typed"] and "marker-in-log" in streams["logs"] and streams["memory"] > 0
        assert streams["left_running"] and streams["hung_up"]  # by the agent, on its host's queue

        # The second engine stops: its sandbox is unreachable, never changed; the first is served.
        h2.stop_engine()
        state = wait(
            lambda: (s := shell(panel, SHELL_STATE))["hosts"]["far"]["unreachable"] and s,
            timeout=60,
            what="far unreachable",
        )
        assert state["hosts"]["local"]["unreachable"] == ""
        refused = manage(panel, "sandbox", "stop", "far-box")
        assert refused.returncode != 0 and "unreachable" in refused.stderr + refused.stdout
        assert manage(panel, "sandbox", "stop", "near-box").returncode == 0
        wait(lambda: shell(panel, SHELL_STATE)["sandboxes"]["near-box"]["status"] == "stopped", timeout=60, what="near-box stopped")
        # Its row is kept as its agent last saw it (its container stopped with the engine; the
        # pages show it "unreachable" while no beat comes): never destroyed, never given an action.
        assert shell(panel, SHELL_STATE)["sandboxes"]["far-box"]["status"] in ("running", "stopped")
        assert shell(panel, SHELL_STATE)["sandboxes"]["far-box"]["pending"] == ""

        # Started again: reachable, its sandbox resynced with what its engine says now (its
        # container stopped with the engine), and started again from the panel.
        h2.start_engine()
        wait(lambda: shell(panel, SHELL_STATE)["hosts"]["far"]["unreachable"] == "", timeout=60, what="far back")
        wait(
            lambda: shell(panel, SHELL_STATE)["sandboxes"]["far-box"]["status"] in ("stopped", "error"),
            timeout=90,
            what="far-box resynced by its agent",
        )
        done = manage(panel, "sandbox", "start", "far-box")
        assert done.returncode == 0, done.stdout + done.stderr
        wait(
            lambda: (b := shell(panel, SHELL_STATE)["sandboxes"]["far-box"])["status"] == "running" and not b["pending"],
            timeout=120,
            what="far-box running again",
        )
        actions = shell(
            panel,
            "import json; from audit.models import AuditEvent; "
            "print(json.dumps(list(AuditEvent.objects.filter(target='host far').values_list('action', flat=True))))",
        )
        assert "host.joined" in actions
    finally:
        if h2.docker("version", check=False).returncode != 0:
            h2.start_engine()  # a failure while it was stopped: its sandbox is destroyed there too
        for name in ("near-box", "far-box"):  # while the workers run: they carry it out
            manage(panel, "sandbox", "destroy", name, "--yes", timeout=60)
        try:
            wait(
                lambda: all(b["status"] == "destroyed" for b in shell(panel, SHELL_STATE)["sandboxes"].values()),
                timeout=60,
                what="both destroyed",
            )
        finally:
            stop(panel_worker)
            stop(agent)
            h2.run(sys.executable, "manage.py", "egress", "remove", env=agent_env, timeout=60)


def _why_no_internet(h2) -> str:
    """What the second host's firewall and routes say, and whether a plain container reaches out."""
    url = f"http://{h2.internet}:{h2.internet_port}/"
    said = h2.run("iptables-save", "-c").stdout + h2.run("ip", "route").stdout + h2.run("ip", "-br", "addr").stdout
    for network in ("ccpanel-test30", "bridge"):
        done = h2.docker("run", "--rm", "--network", network, TEST_IMAGE, "timeout", "3", "wget", "-q", "-O-", url, check=False)
        said += f"\na plain container on {network}: {done.returncode} {done.stdout} {done.stderr}"
    return said


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
