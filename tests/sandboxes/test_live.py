"""Live updates scale, and the page shows exactly what the service allows.

Fast tier: the websocket consumers run under WebsocketCommunicator with the in-memory channel
layer; the buttons come from the same action table the services enforce."""

import re

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db.backends.utils import CursorWrapper

from controlpanel.asgi import application
from sandboxes import live, services
from sandboxes.models import Sandbox
from sandboxes.rows import BUTTONS, render_row, row_for
from teams.models import Membership
from teams.permissions import Role
from tests.support.web import ws_headers

S = Sandbox.Status


@pytest.fixture
def in_memory_layer(settings, transactional_db):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def make_rows(team, count: int) -> list[Sandbox]:
    return [
        Sandbox.objects.create(name=f"box-{i:03d}", team=team, image="img", memory_mb=256, cpus=1, pids_limit=10, status=S.RUNNING)
        for i in range(count)
    ]


def sessions(client_factory, django_user_model, team, count: int) -> list[str]:
    cookies = []
    for i in range(count):
        user = django_user_model.objects.create_user(f"watcher{i}", password="pw-123456789")
        Membership.objects.create(user=user, team=team, role=Role.OPERATOR)
        client = client_factory()
        client.force_login(user)
        cookies.append(client.cookies[settings.SESSION_COOKIE_NAME].value)
    return cookies


def queries_for_one_event(team, cookies: list[str], sandbox: Sandbox) -> tuple[int, list[str]]:
    """Open a dashboard socket per cookie, then broadcast one status change; return the queries
    the consumers ran for it and the messages they sent."""
    executed: list[str] = []
    real = CursorWrapper._execute_with_wrappers

    def counting(self, sql, *args, **kwargs):
        # Counted on every connection, whichever thread the consumers' database work runs in.
        executed.append(sql)
        return real(self, sql, *args, **kwargs)

    async def scenario():
        sockets = []
        for cookie in cookies:
            communicator = WebsocketCommunicator(application, "/ws/sandboxes/?page=1", headers=ws_headers(cookie))
            assert (await communicator.connect())[0]
            await communicator.receive_from()  # the page, sent on connect
            sockets.append(communicator)
        sent = []
        CursorWrapper._execute_with_wrappers = counting
        try:
            await sync_to_async(live._send)(
                live.team_group(team.pk), {"type": live.STATUS, "sandbox_id": sandbox.pk, "team_id": team.pk, "created": False}
            )
            for communicator in sockets:
                sent.append(await communicator.receive_from(timeout=5))
        finally:
            CursorWrapper._execute_with_wrappers = real
        for communicator in sockets:
            await communicator.disconnect()
        return sent

    sent = async_to_sync(scenario)()
    return len(executed), sent


def test_queries_per_status_event_do_not_grow_with_sandboxes(in_memory_layer, client_factory, django_user_model, team):
    cookies = sessions(client_factory, django_user_model, team, 5)
    one = make_rows(team, 1)
    few, sent = queries_for_one_event(team, cookies, one[0])
    make_rows_more = [
        Sandbox.objects.create(name=f"more-{i:03d}", team=team, image="img", memory_mb=256, cpus=1, pids_limit=10, status=S.STOPPED)
        for i in range(49)
    ]
    assert Sandbox.objects.count() == 50 and make_rows_more
    many, sent_many = queries_for_one_event(team, cookies, one[0])
    assert few == many, (few, many)
    assert few == 5 * 4  # per socket: the user, the session, the sandbox, the role
    # Each socket got just the one row, not the dashboard.
    for message in sent + sent_many:
        assert message.count("<tr ") == 1 and f'id="sandbox-{one[0].pk}"' in message


@pytest.fixture
def client_factory():
    from django.test import Client

    return Client


ROLES = [Role.VIEWER, Role.OPERATOR, Role.ADMIN]


@pytest.mark.django_db
@pytest.mark.parametrize("status", [s for s in S.values])
@pytest.mark.parametrize("pending", ["", "start"])
def test_the_buttons_are_exactly_the_actions_the_service_allows(team, status, pending, django_user_model):
    users = {}
    for role in ROLES:
        users[role] = django_user_model.objects.create_user(f"u-{role}", password="pw-123456789")
        Membership.objects.create(user=users[role], team=team, role=role)
    for role in ROLES:
        for action in Sandbox.Action.values:
            sandbox = Sandbox.objects.create(
                name=f"{action}-{role}"[:40],
                team=team,
                image="img",
                memory_mb=256,
                cpus=1,
                pids_limit=10,
                status=status,
                pending_action=pending,
            )
            row = row_for(sandbox, role, csrf="token")
            shown = set(re.findall(r'name="action" value="(\w+)"', render_row(row)))
            if role == Role.VIEWER:
                shown = set()  # the row says "view only"
            try:
                services.sandbox_request_action(actor=users[role], sandbox=sandbox, action=action, enqueue=False)
                allowed = True
            except (services.SandboxError, PermissionError, Exception) as exc:  # noqa: BLE001 - refused, whichever way
                assert type(exc).__name__ in ("SandboxError", "PermissionDenied"), exc
                allowed = False
            if action in BUTTONS:
                assert (action in shown) == allowed, (status, pending, role, action, shown)
            else:  # Destroy: its form on the sandbox's page
                assert row.can_destroy == allowed, (status, pending, role, action)
            sandbox.delete()


@pytest.mark.django_db
def test_the_dashboard_pages_and_searches_beyond_fifty(client, admin_user, team):
    Sandbox.objects.bulk_create(
        [Sandbox(name=f"box-{i:03d}", team=team, image="img", memory_mb=256, cpus=1, pids_limit=10) for i in range(200)]
    )
    client.force_login(admin_user)
    first = client.get("/").content.decode()
    assert first.count('<tr id="sandbox-') == 50 and "box-000" in first and "box-050" not in first
    assert "Page 1 of 4 (200 sandboxes)" in first
    last = client.get("/?page=4").content.decode()
    assert last.count('<tr id="sandbox-') == 50 and "box-199" in last
    found = client.get("/?q=box-12").content.decode()
    assert found.count('<tr id="sandbox-') == 10 and "Page" not in found.split("sandbox-rows")[1]
    assert client.get("/?page=999").status_code == 200 and client.get("/?page=x").status_code == 200


def test_a_dashboard_socket_on_page_two_sends_page_two(in_memory_layer, client_factory, django_user_model, team):
    """Found by review: the socket of page 2 used to send page 1 in its place."""
    Sandbox.objects.bulk_create(
        [Sandbox(name=f"box-{i:03d}", team=team, image="img", memory_mb=256, cpus=1, pids_limit=10) for i in range(60)]
    )
    [cookie] = sessions(client_factory, django_user_model, team, 1)

    async def scenario():
        communicator = WebsocketCommunicator(application, "/ws/sandboxes/?page=2", headers=ws_headers(cookie))
        assert (await communicator.connect())[0]
        page = await communicator.receive_from()
        await communicator.disconnect()
        return page

    page = async_to_sync(scenario)()
    assert "box-050" in page and "box-000" not in page and page.count("<tr id=") == 10


@pytest.mark.django_db
def test_a_team_name_cannot_break_out_of_a_confirm(client, admin_user):
    from teams.models import Team

    team = Team.objects.create(name="ops');fetch('/admin/');('", slug="ops")
    Membership.objects.create(user=admin_user, team=team, role=Role.ADMIN)
    client.force_login(admin_user)
    html = client.get("/teams/ops/").content.decode()
    assert "fetch('/admin/')" not in html and "\\u0027" in html


@pytest.mark.django_db(transaction=True)
def test_the_stats_collector_polls_only_while_someone_watches(team, fake_engine, monkeypatch):
    """One collector per host serves every viewer; with no viewer it stops polling."""
    import asyncio

    from sandboxes import engine
    from sandboxes.live import stats
    from sandboxes.live.stats import StatsCollector

    monkeypatch.setattr(stats, "INTERVAL", 0.2)  # a fifth of the real period: the same ticks, sooner

    fake_engine.stats_once = lambda cid: {
        "read": "now",
        "cpu_stats": {"system_cpu_usage": time_ns(), "cpu_usage": {"total_usage": 1}},
        "memory_stats": {"usage": 1 << 20, "limit": 256 << 20},
        "pids_stats": {"current": 2},
    }
    Sandbox.objects.create(
        name="polled", team=team, image="img", memory_mb=256, cpus=1, pids_limit=10, status=S.RUNNING, container_id="c" * 64
    )
    collector = StatsCollector(engine.default_host())
    received = []

    async def scenario():
        async def one(current):
            received.append(("one", current))

        async def two(current):
            received.append(("two", current))

        collector.subscribe("a", one)
        collector.subscribe("b", two)
        await asyncio.sleep(2.3 * stats.INTERVAL)
        taken = collector.samples_taken
        collector.unsubscribe("a")
        collector.unsubscribe("b")
        await asyncio.sleep(1.5 * stats.INTERVAL)
        return taken

    taken = async_to_sync(scenario)()
    assert taken >= 2 and collector.samples_taken == taken and collector.task is None  # stopped with the last viewer
    assert {who for who, _ in received} == {"one", "two"}  # one sampling served both
    assert len([1 for who, _ in received if who == "one"]) == taken


def time_ns() -> int:
    import time

    return time.time_ns()
