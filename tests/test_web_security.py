"""The panel's own defences: exact websocket origins, the Host check on every response, sockets
closed at logout, throttled sign-ins, and its secrets kept to itself."""

import http.client
import multiprocessing
import os
import stat
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import Client

from audit.models import AuditEvent
from controlpanel.asgi import application
from controlpanel.settings import env as panel_env
from sandboxes.models import Sandbox
from tests.support.paths import ROOT
from tests.support.settings import base_settings

pytestmark = pytest.mark.django_db
ORIGIN = f"http://127.0.0.1:{django_settings.PANEL_PORT}"


@pytest.fixture
def in_memory_layer(settings, transactional_db):
    """Consumers run their database work through channels' database_sync_to_async, which closes
    the connection after each call: these tests need committed data (transactional_db)."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def headers(session: str | None, origin: str | None, host: str = "127.0.0.1:8000") -> list[tuple[bytes, bytes]]:
    found = [(b"host", host.encode())]
    if origin is not None:
        found.append((b"origin", origin.encode()))
    if session:
        found.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session}".encode()))
    return found


def connects(session: str | None, origin: str | None, host: str = "127.0.0.1:8000") -> bool:
    async def attempt():
        communicator = WebsocketCommunicator(application, "/ws/sandboxes/", headers=headers(session, origin, host))
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    return async_to_sync(attempt)()


def signed_in(client, user) -> str:
    """`client` signed in as `user`; its session key (what its page's sockets send)."""
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


async def dashboard_socket(session: str) -> WebsocketCommunicator:
    """The dashboard's socket of `session`, connected, with the rows it sends on connect read."""
    communicator = WebsocketCommunicator(application, "/ws/sandboxes/", headers=headers(session, ORIGIN))
    connected, _ = await communicator.connect()
    assert connected
    await communicator.receive_from()
    return communicator


@pytest.fixture
def session(client, admin_user) -> str:
    return signed_in(client, admin_user)


@pytest.mark.parametrize(
    "origin, accepted",
    [
        (ORIGIN, True),
        (f"http://localhost:{django_settings.PANEL_PORT}", True),
        ("http://127.0.0.1:9999", False),  # another port on the same machine
        ("http://localhost:3000", False),
        ("http://evil.example:8000", False),
        (f"https://127.0.0.1:{django_settings.PANEL_PORT}", False),
        (None, False),  # no Origin at all
    ],
)
def test_websockets_accept_only_the_panels_exact_origins(in_memory_layer, session, origin, accepted):
    assert connects(session, origin) is accepted


def test_a_websocket_with_a_foreign_host_is_refused(in_memory_layer, session):
    assert connects(session, ORIGIN, host="evil.example") is False


def test_logging_out_closes_that_sessions_websockets(in_memory_layer, client, admin_user):
    session = signed_in(client, admin_user)

    async def scenario():
        communicator = await dashboard_socket(session)
        response = await sync_to_async(client.post)("/logout/")
        assert response.status_code == 302
        closed = await communicator.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4401}

    async_to_sync(scenario)()


def test_pages_refuse_a_foreign_host_header(client, admin_user):
    client.force_login(admin_user)
    assert client.get("/", HTTP_HOST="evil.example").status_code == 400
    assert client.get("/", HTTP_HOST="127.0.0.1:8000").status_code == 200


@pytest.mark.docker
def test_static_files_refuse_a_foreign_host_header_too(panel_server):
    port = int(panel_server.rsplit(":", 1)[1])

    def get(path: str, host: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path, headers={"Host": host})
        status = conn.getresponse().status
        conn.close()
        return status

    assert get("/static/css/panel.css", f"127.0.0.1:{port}") == 200
    assert get("/static/css/panel.css", "evil.example") == 400
    assert get("/login/", "evil.example") == 400
    assert get("/login/", f"localhost:{port}") == 200


@pytest.fixture
def lockout_after_three(settings):
    settings.AXES_FAILURE_LIMIT = 3


def login(client, username: str, password: str, ip: str) -> int:
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=ip).status_code


def test_failed_sign_ins_lock_the_user_name(client, admin_user, lockout_after_three):
    assert [login(client, "admin", "wrong", "10.0.0.1") for _ in range(3)] == [200, 200, 429]
    assert login(client, "admin", "admin-pass-123", "10.0.0.2") == 429  # the right password, from elsewhere
    assert AuditEvent.objects.filter(action="auth.locked_out", target="admin").exists()


def test_failed_sign_ins_lock_the_address(client, admin_user, lockout_after_three):
    for name in ("x1", "x2", "x3"):
        login(client, name, "wrong", "10.0.0.3")
    assert login(client, "admin", "admin-pass-123", "10.0.0.3") == 429
    assert login(client, "admin", "admin-pass-123", "10.0.0.4") == 302  # another address is not affected


def test_var_and_the_keys_are_the_panels_alone(admin_user):
    var = Path(django_settings.VAR_DIR)
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    for name in ("secret_key", "audit_key"):
        assert stat.S_IMODE((var / name).stat().st_mode) == 0o600, name
    db = django_settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        assert stat.S_IMODE(Path(db["NAME"]).stat().st_mode) == 0o600


def _make_key(var: str, queue) -> None:
    panel_env.VAR_DIR = Path(var)
    queue.put(panel_env.key_file("race_key"))


def test_a_key_is_created_once_even_by_processes_racing(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_make_key, args=(str(tmp_path), queue)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    keys = {queue.get(timeout=5) for _ in procs}
    assert len(keys) == 1 and len(keys.pop()) > 40
    assert stat.S_IMODE((tmp_path / "race_key").stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["race_key"]  # no temporary file left


def test_the_panels_own_redis_is_a_socket_inside_var():
    redis_url, broker, var = base_settings("REDIS_URL", "CELERY_BROKER_URL", "VAR_DIR", unset=lambda name: name == "REDIS_URL")
    assert redis_url == f"unix://{var}/redis.sock?db=0"
    assert broker == f"redis+socket://{var}/redis.sock?virtual_host=0"


def test_a_setting_that_cannot_be_read_stops_start_up():
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="controlpanel.settings.base", SANDBOX_PIDS_LIMIT="lots")
    out = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "SANDBOX_PIDS_LIMIT='lots' is not a whole number" in out.stderr


def test_a_socket_opened_before_a_password_change_closes_at_logout(in_memory_layer, client, admin_user):
    """The password change gives the session a new key; logging out must still close the socket
    opened under the old one (found by review)."""
    session = signed_in(client, admin_user)

    async def scenario():
        communicator = await dashboard_socket(session)
        response = await sync_to_async(client.post)(
            "/admin/password_change/",
            {"old_password": "admin-pass-123", "new_password1": "N3w-pass-word-xyz", "new_password2": "N3w-pass-word-xyz"},
        )
        assert response.status_code == 302
        assert client.cookies[django_settings.SESSION_COOKIE_NAME].value != session
        assert (await sync_to_async(client.post)("/logout/")).status_code == 302
        assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}

    async_to_sync(scenario)()


def test_a_socket_whose_session_ended_otherwise_gets_nothing_more(in_memory_layer, client, admin_user, team):
    """A session that ends without a logout (expired, deleted): the next message closes the
    socket instead of showing it anything."""
    from django.contrib.sessions.models import Session

    from sandboxes import live
    from sandboxes.models import Sandbox

    session = signed_in(client, admin_user)
    sandbox = Sandbox.objects.create(name="quiet", team=team, image="x", memory_mb=256, cpus=1, pids_limit=10)

    async def scenario():
        communicator = await dashboard_socket(session)
        await sync_to_async(Session.objects.filter(session_key=session).delete)()
        await sync_to_async(live._send)(
            live.team_group(team.pk), {"type": live.STATUS, "sandbox_id": sandbox.pk, "team_id": team.pk, "created": False}
        )
        assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}

    async_to_sync(scenario)()


def test_a_websocket_while_redis_is_down_closes_cleanly(settings, transactional_db, client, admin_user):
    """Redis down: the socket is refused with "try again later" (the page retries), never an error."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "unix:///nonexistent/redis.sock"}]},
        }
    }
    session = signed_in(client, admin_user)

    async def scenario():
        communicator = WebsocketCommunicator(application, "/ws/sandboxes/", headers=headers(session, ORIGIN))
        connected, code = await communicator.connect(timeout=10)
        assert not connected and code == 1013

    async_to_sync(scenario)()


def test_a_post_without_its_csrf_token_is_refused(admin_user, team):
    """Every form posts its token; a page of another site cannot."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    before = Sandbox.objects.count()
    response = client.post("/sandboxes/new/", {"name": "csrf-victim", "memory_mb": 512, "cpus": 1, "network_mode": "none"})
    assert response.status_code == 403
    assert Sandbox.objects.count() == before
    assert client.post("/logout/").status_code == 403  # even signing out needs the token


def test_check_deploy_passes_with_only_the_https_warnings_silenced():
    out, err = StringIO(), StringIO()
    call_command("check", "--deploy", "--fail-level", "WARNING", stdout=out, stderr=err)
    assert "no issues" in out.getvalue()
    assert sorted(django_settings.SILENCED_SYSTEM_CHECKS) == ["security.W004", "security.W008", "security.W012", "security.W016"]
