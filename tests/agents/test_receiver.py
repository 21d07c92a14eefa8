"""The receiver with real Docker: a sandbox posts Claude Code's OTLP/JSON from inside, on its own
loopback, in `none` and in `internet` mode; the rows are its own; the listener answers nothing
else, exists only in the sandbox's namespace, comes back after a restart, and refuses garbage."""

import socket
import subprocess
import time
from pathlib import Path

import pytest
from django.conf import settings

from agents.models import AgentEvent
from tests.support.docker import docker_cli

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
SAMPLE = (Path(__file__).parent / "claude_logs.json").read_bytes()  # a real request of Claude Code


def post(sandbox, body: bytes, path: str = "/v1/logs", content_type: str = "application/json") -> str:
    """POST `body` from inside the sandbox to its own 127.0.0.1; the answer's status line or body."""
    subprocess.run(["docker", "exec", "-i", sandbox.container_id, "sh", "-c", "cat > /tmp/otel.json"], input=body, check=True)
    url = f"http://127.0.0.1:{settings.AGENT_OTLP_PORT}{path}"
    done = docker_cli(
        "exec",
        sandbox.container_id,
        "wget",
        "-q",
        "-O",
        "-",
        "--header",
        f"Content-Type: {content_type}",
        "--post-file",
        "/tmp/otel.json",
        url,
        check=False,
    )
    return (done.stdout + done.stderr).strip()


def posted(sandbox, body: bytes, timeout: float = 15.0) -> str:
    """As post(), waiting for the receiver to open the sandbox's listener."""
    deadline = time.monotonic() + timeout
    while True:
        answer = post(sandbox, body)
        if answer == "{}" or time.monotonic() > deadline:
            return answer
        time.sleep(0.3)


def rows_of(sandbox, count: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while AgentEvent.objects.filter(sandbox=sandbox).count() < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return AgentEvent.objects.filter(sandbox=sandbox).count()


def test_a_sandbox_without_network_and_one_with_the_internet_both_reach_their_own_receiver(make_sandbox, clean_docker, agent_receiver):
    none = make_sandbox("otel-none", network_mode="none")
    net = make_sandbox("otel-net", network_mode="internet")
    assert none.status == net.status == "running", (none.status_detail, net.status_detail)
    assert posted(none, SAMPLE) == "{}"
    assert rows_of(none, 20) == 20 and AgentEvent.objects.filter(sandbox=net).count() == 0
    assert posted(net, SAMPLE) == "{}"
    assert rows_of(net, 20) == 20 and AgentEvent.objects.filter(sandbox=none).count() == 20
    bash = AgentEvent.objects.get(sandbox=none, kind="tool_result", tool="Bash")
    assert bash.summary == "echo hello-from-bash > /workspace/Projects/out.txt" and bash.success is True
    # The environment tells Claude Code where to send its events.
    env = docker_cli("exec", none.container_id, "env").stdout
    assert f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{settings.AGENT_OTLP_PORT}" in env and "CLAUDE_CODE_ENABLE_TELEMETRY=1" in env
    assert "OTEL_LOG_USER_PROMPTS" not in env


def test_the_listener_answers_nothing_else_and_lives_only_in_the_sandbox(make_sandbox, clean_docker, agent_receiver):
    box = make_sandbox("otel-only", network_mode="none")
    assert posted(box, b'{"resourceLogs": []}') == "{}"
    assert "404" in post(box, SAMPLE, path="/v1/traces")
    assert "404" in post(box, SAMPLE, path="/../../etc/passwd")
    # The host's own loopback has nothing on the port: the socket is in the sandbox's namespace.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", settings.AGENT_OTLP_PORT)) != 0
    assert AgentEvent.objects.count() == 0


def test_garbage_and_oversized_bodies_are_refused_and_change_nothing(make_sandbox, clean_docker, agent_receiver):
    box = make_sandbox("otel-bad", network_mode="none")
    assert posted(box, b'{"resourceLogs": []}') == "{}"
    assert "400" in post(box, b"this is not json")
    assert "400" in post(box, b'{"resourceLogs": {"x": 1}}')
    assert "415" in post(box, SAMPLE, content_type="application/x-protobuf")
    assert "413" in post(box, b"{" + b" " * (settings.AGENT_OTLP_MAX_BODY + 10) + b"}")
    time.sleep(0.5)
    assert AgentEvent.objects.filter(sandbox=box).count() == 0
    assert post(box, SAMPLE) == "{}"  # and it still works
    assert rows_of(box, 20) == 20


def test_the_listener_is_opened_again_after_a_restart_and_closed_at_a_stop(make_sandbox, clean_docker, agent_receiver):
    box = make_sandbox("otel-restart", network_mode="none")
    assert posted(box, b'{"resourceLogs": []}') == "{}"
    before = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", box.container_id], capture_output=True, text=True).stdout.strip()
    docker_cli("restart", "-t", "0", box.container_id)
    after = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", box.container_id], capture_output=True, text=True).stdout.strip()
    assert before != after
    assert posted(box, SAMPLE) == "{}"
    assert rows_of(box, 20) == 20
    closed = f"no longer listening for sandbox {box.pk}'s"
    assert agent_receiver.output().count(f"listening for sandbox {box.pk}'s") >= 3  # opened, closed (the old namespace), opened
    docker_cli("stop", "-t", "0", box.container_id)
    deadline = time.monotonic() + 10
    while agent_receiver.output().count(closed) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert agent_receiver.output().count(closed) == 2  # the stopped sandbox's namespace is not held open
