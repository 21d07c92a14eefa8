"""The receiver's HTTP side, served in-process on a loopback socket (the namespace part is tried
with real Docker in test_receiver.py): keep-alive, every bound, the budget, gzip and its bombs."""

import asyncio
import gzip
import http.client
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from agents.budget import EventBudget
from agents.receiver import HEAD_LIMIT, Listener, Receiver

SAMPLE = (Path(__file__).parent / "claude_logs.json").read_bytes()  # 20 records


@pytest.fixture
def served(settings):
    """A receiver whose one listener (sandbox 7) is on a loopback port here; what it would have
    written is kept in `put` instead of the database."""
    settings.AGENT_OTLP_MAX_BODY = 200_000
    receiver = Receiver()
    put: list[tuple[int, list]] = []
    receiver.writer.put = lambda sandbox_id, rows: put.append((sandbox_id, rows))  # type: ignore[method-assign]
    receiver.budget = EventBudget(rate=1, burst=50)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict = {}

    async def start():
        listener = receiver.listeners[7] = Listener(7, "c", 0, False)
        server = await asyncio.start_server(lambda r, w: receiver.serve(listener, r, w), "127.0.0.1", 0, limit=HEAD_LIMIT)
        box["port"], box["server"] = server.sockets[0].getsockname()[1], server
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    ready.wait(5)
    yield box["port"], put, receiver
    loop.call_soon_threadsafe(box["server"].close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    for task in asyncio.all_tasks(loop):  # the connections still open end as the receiver's stop ends them
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0.1))
    loop.close()


def post(conn, body: bytes, path: str = "/v1/logs", **headers) -> tuple[int, bytes]:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    if response.status == 429:
        assert response.getheader("Retry-After") == "1"
    return response.status, response.read()


def test_requests_on_one_connection_are_answered_and_their_events_kept_for_their_sandbox(served):
    port, put, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    assert post(conn, SAMPLE) == (200, b"{}")
    assert post(conn, gzip.compress(SAMPLE), **{"Content-Encoding": "gzip"}) == (200, b"{}")
    assert post(conn, b'{"resourceMetrics": []}', "/v1/metrics") == (200, b"{}")
    assert [(sandbox_id, len(rows)) for sandbox_id, rows in put] == [(7, 20), (7, 20)]


def test_over_the_budget_a_request_is_refused_whole(served):
    port, put, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    assert post(conn, SAMPLE)[0] == post(conn, SAMPLE)[0] == 200  # 40 of the burst of 50
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    status, body = post(conn, SAMPLE)
    assert status == 429 and b"more events than it may" in body and len(put) == 2


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GET /v1/logs HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"POST /v1/traces HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 404),
        (b"POST /v1/logs HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"POST /v1/logs HTTP/1.1\r\nContent-Type: application/json\r\n\r\n", 411),
        (b"POST /v1/logs HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: \xb2\r\n\r\n{}", 411),  # a "digit" int() refuses
        (b"POST /v1/logs HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\n\r\n", 413),
        (b"POST /v1/logs HTTP/1.1\r\nContent-Type: application/x-protobuf\r\nContent-Length: 2\r\n\r\n{}", 415),
        (b"POST /v1/logs HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n[1,2]", 400),
        (b"POST /v1/logs HTTP/1.1\r\nX: " + b"a" * (HEAD_LIMIT + 10) + b"\r\n\r\n", 431),
        (b"nonsense\r\n\r\n", 400),
    ],
)
def test_what_is_not_an_otlp_json_post_is_refused_and_the_connection_closed(served, raw, status):
    port, put, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and b"Connection: close" in answer
    assert put == []


def test_a_gzip_bomb_is_refused_once_it_inflates_past_the_limit(served):
    port, put, _ = served
    bomb = gzip.compress(b" " * 5_000_000)
    status, body = post(http.client.HTTPConnection("127.0.0.1", port, timeout=5), bomb, **{"Content-Encoding": "gzip"})
    assert status == 413 and b"once inflated" in body and put == []
    status, _ = post(http.client.HTTPConnection("127.0.0.1", port, timeout=5), SAMPLE, **{"Content-Encoding": "br"})
    assert status == 415


def test_connections_past_the_limit_are_closed_at_once(served, settings):
    port, _, _ = served
    settings.AGENT_OTLP_MAX_CONNECTIONS = 2
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
            third.sendall(b"POST /v1/logs HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
            try:
                assert third.recv(100) == b""  # closed without an answer
            except ConnectionResetError:
                pass  # closed without an answer, before it read what was sent
    finally:
        for s in held:
            s.close()


def test_the_sandbox_spec_tells_claude_code_to_export_and_prompts_only_where_recorded(db, team):
    from sandboxes.models import Sandbox
    from sandboxes.services.specs import sandbox_spec
    from teams.models import AgentPolicy

    sandbox = Sandbox.objects.create(name="spec", team=team, image="x", memory_mb=256, cpus=1, pids_limit=64)
    env = sandbox_spec(sandbox, extra_mounts=[]).environment
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318" and env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/json"
    assert env["CLAUDE_CODE_ENABLE_TELEMETRY"] == "1" and env["OTEL_LOG_TOOL_DETAILS"] == "1" and "OTEL_LOG_USER_PROMPTS" not in env
    AgentPolicy.objects.create(team=team, record_prompts=True)
    assert sandbox_spec(sandbox, extra_mounts=[]).environment["OTEL_LOG_USER_PROMPTS"] == "1"


def test_a_body_that_never_comes_is_not_waited_for(served, monkeypatch):
    """A sender that announces a body and stops (slowloris) loses its connection after the idle
    time, as one that never finishes its head does: it does not hold a slot and a buffer forever."""
    import agents.receiver

    port, put, _ = served
    monkeypatch.setattr(agents.receiver, "IDLE_SECONDS", 0.5)
    with socket.create_connection(("127.0.0.1", port), timeout=4) as s:
        s.sendall(b"POST /v1/logs HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        started = time.monotonic()
        assert s.recv(100) == b"" and time.monotonic() - started < 3
    assert put == []


def test_json_nested_past_what_python_reads_is_refused_with_a_400(served):
    port, put, receiver = served
    depth = 60_000
    for path in ("/v1/logs", "/v1/metrics"):
        body = b'{"resourceLogs": ' + b"[" * depth + b"]" * depth + b"}"
        status, answer = post(http.client.HTTPConnection("127.0.0.1", port, timeout=5), body, path)
        assert status == 400 and b"nested" in answer
    assert put == [] and receiver.answers[400] == 2


def test_a_sandbox_over_its_budget_is_refused_before_its_body_is_read_and_metrics_count(served):
    """Past its budget a sandbox's requests cost the receiver no parsing: refused on their head
    (its metrics too, each a request from the same budget), so one sandbox cannot keep the one
    event loop of every sandbox busy parsing what it will refuse."""
    port, put, receiver = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    assert post(conn, SAMPLE)[0] == post(conn, SAMPLE)[0] == 200  # 40 of the burst of 50
    assert post(conn, b'{"resourceMetrics": []}', "/v1/metrics")[0] == 200  # 41
    receiver.budget.take(7, 9)  # the rest: none left
    status, body = post(http.client.HTTPConnection("127.0.0.1", port, timeout=5), b'{"resourceMetrics": []}', "/v1/metrics")
    assert status == 429
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # refused on its head: the body never sent
        s.sendall(b"POST /v1/logs HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 429 ")
    assert len(put) == 2


def _bash_call(command: str, error: str) -> bytes:
    attributes = [
        {"key": "event.name", "value": {"stringValue": "tool_result"}},
        {"key": "tool_parameters", "value": {"stringValue": json.dumps({"bash_command": command})}},
        {"key": "error", "value": {"stringValue": error}},
        {"key": "nested", "value": {"arrayValue": {"values": [{"stringValue": error}]}}},
    ]
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": attributes}]}]}]}).encode()


def test_the_sandbox_s_own_secret_values_are_blanked_out_of_its_events(served):
    """An agent that echoes a secret it was given (an env or file secret: it holds the value) in
    a command or an error does not put the value where every viewer of the sandbox reads it."""
    port, put, receiver = served
    receiver.listeners[7].secrets = frozenset({"s3cret-value-123"})
    body = _bash_call("curl -H 'Authorization: Bearer s3cret-value-123' https://x", "401 for s3cret-value-123")
    assert post(http.client.HTTPConnection("127.0.0.1", port, timeout=5), body) == (200, b"{}")
    [(_, [row])] = put
    assert "s3cret-value-123" not in json.dumps(row, default=str)
    assert row["summary"] == "curl -H 'Authorization: Bearer [secret]' https://x"
    assert row["attributes"]["error"] == "401 for [secret]" and row["attributes"]["nested"] == ["401 for [secret]"]


def test_the_database_away_at_a_look_leaves_the_listeners_as_they_are(served, monkeypatch):
    """A look that cannot read the database (SQLite locked by the writer, PostgreSQL restarting)
    keeps the listeners and is tried again at the next: it does not end the receiver (under the
    supervisor, one process that ends stops the panel's others)."""
    from django.db import OperationalError

    port, put, receiver = served

    def locked():
        raise OperationalError("database is locked")

    monkeypatch.setattr(receiver, "wanted", locked)
    asyncio.run(receiver.reconcile())
    assert list(receiver.listeners) == [7]
    assert post(http.client.HTTPConnection("127.0.0.1", port, timeout=5), SAMPLE) == (200, b"{}")
