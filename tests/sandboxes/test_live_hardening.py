"""What a hostile page, a hostile agent or a dying server cannot do to the live views (each test
answers a finding of the review of the live views)."""

import asyncio
import os
import resource
import socket as socketlib

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import HttpCommunicator
from django.test import Client

from controlpanel.asgi import application
from sandboxes import activity, engine
from sandboxes.live import streams
from sandboxes.live.terminal import TerminalConsumer
from sandboxes.models import TerminalSession
from sandboxes.services import terminals
from teams.services import membership_set
from tests.sandboxes.test_streams import connected, has_line, headers_for, lines_of, member, messages_until, signed_in, socket, write
from tests.support.docker import docker_cli
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def shells(container_id: str) -> list[str]:
    out = docker_cli("top", container_id, "-eo", "pid,args").stdout.splitlines()[1:]
    return [line for line in out if " -l" in line]


def received_bytes(seen: list[dict]) -> bytes:
    return b"".join(m.get("b") or b"" for m in seen if m.get("t") == "bytes")


def test_malformed_terminal_messages_change_nothing_and_closing_still_hangs_up(django_user_model, team, make_sandbox, clean_docker):
    sandbox = make_sandbox("fuzzed")
    operator = member(django_user_model, "fuzzer", team, "operator")
    h = headers_for(operator)

    async def scenario():
        ws = await connected(sandbox, "terminal/", h)
        for frame in [
            "[]",
            '{"t":"resize","cols":1e999,"rows":24}',
            '{"t":"resize","cols":true,"rows":2.5}',
            '{"t":"in","d":"\\ud800"}',
            '{"t":"ack","n":1e999}',
            "[" * 100000,
            "null",
            '"text"',
        ]:
            await ws.send_to(text_data=frame)
        await ws.send_to(bytes_data=b"\necho still-$((6*7))\n")  # a fresh line: the lone surrogate typed a "?"
        seen = await messages_until(ws, lambda s: b"still-42" in received_bytes(s), timeout=10)
        await ws.disconnect()
        return seen

    seen = async_to_sync(scenario)()
    assert b"still-42" in received_bytes(seen)
    wait_for(lambda: TerminalSession.objects.get(sandbox=sandbox).ended_at, timeout=10, what="the session to close")
    wait_for(lambda: not shells(sandbox.container_id), timeout=10, what="the shell to be hung up")


def test_malformed_log_acknowledgements_are_ignored(admin_user, make_sandbox, clean_docker):
    sandbox = make_sandbox("acks")
    h = headers_for(admin_user)

    async def scenario():
        ws = await connected(sandbox, "logs/?tail=0", h)
        for frame in ['{"ack": 1e999}', '{"ack": 1e300}', '{"ack": true}', "[]", "[" * 100000]:
            await ws.send_to(text_data=frame)
        await sync_to_async(write)(sandbox, "echo after-the-garbage")
        seen = await messages_until(ws, has_line("after-the-garbage"))
        await ws.disconnect()
        return seen

    assert any(line[2] == "after-the-garbage" for line in lines_of(async_to_sync(scenario)()))


def test_a_removed_operators_shell_is_hung_up(django_user_model, team, admin_user, make_sandbox, clean_docker):
    sandbox = make_sandbox("revoked-shell")
    operator = member(django_user_model, "leaver", team, "operator")
    h = headers_for(operator)

    async def scenario():
        ws = await connected(sandbox, "terminal/", h)
        await ws.send_to(bytes_data=b"echo ready-$((1+1))\n")
        await messages_until(ws, lambda s: b"ready-2" in received_bytes(s), timeout=10)
        await sync_to_async(membership_set)(actor=admin_user, team=team, user=operator, role="viewer")  # demoted
        await ws.send_to(bytes_data=b"touch /tmp/typed-after-demotion\n")
        return await messages_until(ws, lambda s: s[-1].get("t") == "closed", timeout=10)

    seen = async_to_sync(scenario)()
    assert seen[-1]["t"] == "closed"
    wait_for(lambda: not shells(sandbox.container_id), timeout=10, what="the shell to be hung up")
    wait_for(lambda: TerminalSession.objects.get(sandbox=sandbox).ended_at, timeout=10, what="the session to close")
    assert docker_cli("exec", sandbox.container_id, "test", "-e", "/tmp/typed-after-demotion", check=False).returncode == 1


def drained(ws) -> int:
    """The bytes the consumer has sent so far (without waiting: a receive that times out ends
    the application under test)."""
    total = 0
    while not ws.output_queue.empty():
        message = ws.output_queue.get_nowait()
        total += len(message.get("bytes") or b"")
    return total


def test_a_page_that_stops_reading_pauses_the_shell(django_user_model, team, make_sandbox, clean_docker):
    sandbox = make_sandbox("flood")
    operator = member(django_user_model, "flooder", team, "operator")
    h = headers_for(operator)

    async def scenario():
        ws = await connected(sandbox, "terminal/", h)
        await ws.send_to(bytes_data=b"yes flood-flood-flood\n")
        await asyncio.sleep(4)  # never acknowledged
        first = drained(ws)
        await ws.send_to(text_data=f'{{"t":"ack","n":{first}}}')
        await asyncio.sleep(2)
        more = drained(ws)
        await ws.disconnect()
        return first, more

    unacknowledged, after_ack = async_to_sync(scenario)()
    assert unacknowledged <= TerminalConsumer.OUTPUT_WINDOW + 65536  # the window and one read
    assert after_ack > 100_000  # acknowledging lets it go on


def test_a_long_line_without_newline_comes_back_whole_without_stamps_inside(admin_user, make_sandbox, clean_docker):
    sandbox = make_sandbox("longline")
    write(sandbox, "head -c 40000 /dev/zero | tr '\\0' y; echo; echo next")
    stream = engine.engine_for(sandbox).log_stream(sandbox.container_id, tail="all", follow=False)
    text = b"".join(engine.log_file_chunks(iter(stream))).decode()
    stream.close()
    first, second = text.splitlines()[-2:]
    assert first.endswith(" stdout " + "y" * 40000) and second.endswith(" stdout next")
    # Piece by piece, memory stays bounded: a line longer than the cap arrives in pieces.
    write(sandbox, f"head -c {engine.streams.MAX_PIECE * 3 + 5} /dev/zero | tr '\\0' z; echo")
    stream = engine.engine_for(sandbox).log_stream(sandbox.container_id, tail="all", follow=False)
    lines = list(stream)
    pieces = lines[[line.text for line in lines].index(b"next") + 1 :]
    assert [p.partial for p in pieces] == [True, True, True, False]
    assert sum(len(p.text) for p in pieces) == engine.streams.MAX_PIECE * 3 + 5


def test_file_activity_survives_bad_names_and_a_forest_of_folders(admin_user, make_sandbox, clean_docker):
    sandbox = make_sandbox("forest")
    projects = sandbox.workspace_path / "Projects"
    with open(os.path.join(str(projects).encode(), b"bad-\xff\xfe-name"), "wb") as f:
        f.write(b"x")
    for i in range(3000):
        (projects / f"d{i:04}").mkdir()
    (projects / "d2999" / "planted.txt").write_text("found me")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 64, hard))
    try:
        found = activity.recent_files(sandbox, within_seconds=3600)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    paths = {e.path for e in found.entries}
    assert "d2999/planted.txt" in paths and "bad-\ufffd\ufffd-name" in paths
    client = Client()
    client.force_login(admin_user)
    response = client.get(f"/sandboxes/{sandbox.pk}/files/?within=1h")
    assert response.status_code == 200 and "bad-\ufffd\ufffd-name" in response.content.decode()


def test_signing_out_closes_only_that_sessions_sockets(admin_user, make_sandbox, clean_docker):
    sandbox = make_sandbox("two-browsers")
    leaving, headers_leaving = signed_in(admin_user)
    _, headers_staying = signed_in(admin_user)

    async def scenario():
        a = await connected(sandbox, "logs/?tail=0", headers_leaving)
        b = await connected(sandbox, "logs/?tail=0", headers_staying)
        await sync_to_async(leaving.post)("/logout/")
        closed = await messages_until(a, lambda s: s[-1].get("t") == "closed", timeout=10)
        await sync_to_async(write)(sandbox, "echo still-watched")
        seen = await messages_until(b, has_line("still-watched"))
        await b.disconnect()
        return closed, seen

    closed, seen = async_to_sync(scenario)()
    assert closed[-1] == {"t": "closed", "code": streams.CLOSE_UNAUTHORISED}
    assert any(line[2] == "still-watched" for line in lines_of(seen))


def test_one_user_cannot_open_sockets_without_end(admin_user, make_sandbox, clean_docker, monkeypatch):
    sandbox = make_sandbox("many")
    monkeypatch.setattr(streams, "MAX_SOCKETS_PER_USER", 3)
    h = headers_for(admin_user)

    async def scenario():
        opened = [socket(f"/ws/sandboxes/{sandbox.pk}/stats/", h) for _ in range(4)]
        results = [(await ws.connect())[:2] for ws in opened]
        for ws in opened:
            await ws.disconnect()
        again = socket(f"/ws/sandboxes/{sandbox.pk}/stats/", h)
        reopened = (await again.connect())[0]
        await again.disconnect()
        return results, reopened

    results, reopened = async_to_sync(scenario)()
    assert [r[0] for r in results] == [True, True, True, False] and results[3][1] == streams.CLOSE_TOO_MANY
    assert reopened  # closed sockets no longer count


def test_the_websocket_port_serves_no_pages():
    async def get():
        communicator = HttpCommunicator(application, "GET", "/login/", headers=[(b"host", b"127.0.0.1:8001")])
        return await communicator.get_response()

    response = async_to_sync(get)()
    assert response["status"] == 404 and b"served on port" in response["body"]


def test_a_session_whose_server_was_killed_is_closed_and_its_shell_hung_up(admin_user, make_sandbox, clean_docker):
    sandbox = make_sandbox("orphan")
    terminal = engine.engine_for(sandbox).open_terminal(
        sandbox.container_id, user="1000:1000", workdir="/workspace", cmd=["/bin/sh", "-l"], env={}
    )
    session = terminals.terminal_open(actor=admin_user, sandbox=sandbox)
    dead = f"{socketlib.gethostname()}:999999:1"  # a pid that is not running
    terminals.terminal_started(session=session, exec_id=terminal.exec_id, server=dead)
    alive = terminals.terminal_open(actor=admin_user, sandbox=sandbox)
    terminals.terminal_started(session=alive, exec_id="", server=terminals.this_server())
    wait_for(lambda: shells(sandbox.container_id), timeout=10, what="the shell")
    assert terminals.close_orphan_terminals() == 1
    session.refresh_from_db()
    alive.refresh_from_db()
    assert session.ended_at is not None and "websocket server stopped" in session.end_reason
    assert alive.ended_at is None
    wait_for(lambda: not shells(sandbox.container_id), timeout=10, what="the shell to be hung up")
    terminal.close()


def test_a_hang_up_signals_only_an_exec_of_the_sandboxs_own_container(admin_user, make_sandbox, clean_docker, settings):
    """An exec id is only a string (from the queue, or a session's row): the hang-up, here or by
    a host's agent, signals it only when it is an exec of the container the panel recorded for
    that sandbox; another container's shell on the same engine keeps running."""
    from sandboxes.tasks import terminal_end_task

    mine, other = make_sandbox("hangs-mine"), make_sandbox("hangs-other")
    terminal = engine.engine_for(other).open_terminal(
        other.container_id, user="1000:1000", workdir="/workspace", cmd=["/bin/sh", "-l"], env={}
    )
    wait_for(lambda: shells(other.container_id), timeout=10, what="the shell")
    terminals.end_shell(sandbox=mine, exec_id=terminal.exec_id)
    terminal_end_task(settings.PANEL_HOST, terminal.exec_id, mine.pk)  # as an agent's worker runs it
    terminal_end_task(settings.PANEL_HOST, terminal.exec_id)  # a message without its sandbox
    assert shells(other.container_id) and engine.engine_for(other).terminal_running(terminal.exec_id)
    terminal_end_task(settings.PANEL_HOST, terminal.exec_id, other.pk)
    wait_for(lambda: not shells(other.container_id), timeout=10, what="the shell to be hung up")
    terminal.close()
