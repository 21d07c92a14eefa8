"""Join tokens where the panel is on SQLite (the suite's default): refused, saying how to move;
and a joined host's agent stopped by its own heartbeat once its token is revoked. The tokens'
whole flow on PostgreSQL is test_join_postgres.py."""

import shutil
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings
from django.utils import timezone

from audit.models import AuditEvent
from hosts import heartbeat, join
from hosts import services as host_services
from hosts.models import Host, JoinToken
from tests.support.processes import Proc
from tests.support.waiting import wait_for

MOVE = "manage.py database move --to postgres://"


@pytest.fixture
def agent_urls(settings):
    settings.PANEL_AGENT_REDIS_URL = "rediss://:agent-pw@127.0.0.1:6390/0"
    settings.PANEL_AGENT_DATABASE_URL = "postgres://panel@127.0.0.1:5432/ccpanel"


@pytest.fixture
def on_sqlite(monkeypatch):
    """The panel's database as join.py sees it is SQLite, whichever the suite runs on (`make
    test` runs it on PostgreSQL too, where a token is rightly made)."""
    from types import SimpleNamespace

    monkeypatch.setattr(join, "connection", SimpleNamespace(vendor="sqlite"))


@pytest.mark.django_db
def test_no_join_token_on_sqlite_the_message_says_how_to_move(admin_user, agent_urls, on_sqlite):
    with pytest.raises(host_services.HostError) as refused:
        join.token_create(actor=admin_user, name="elsewhere")
    assert MOVE in str(refused.value) and "PostgreSQL" in str(refused.value)
    assert not JoinToken.objects.exists() and not AuditEvent.objects.filter(action__startswith="host.token").exists()


@pytest.mark.django_db
def test_the_hosts_page_refuses_a_token_on_sqlite_and_makes_none(logged_in, agent_urls, on_sqlite):
    response = logged_in.post("/hosts/tokens/new/", {"name": "elsewhere", "labels": ""})
    assert response.status_code == 400
    page = response.content.decode()
    assert MOVE in page and "ccpj1." not in page
    assert not JoinToken.objects.exists()


@pytest.mark.django_db
def test_only_a_superuser_makes_or_revokes_a_token(team, django_user_model, agent_urls):
    from django.core.exceptions import PermissionDenied

    user = django_user_model.objects.create_user("plain", password="pw-plain-123")
    with pytest.raises(PermissionDenied):
        join.token_create(actor=user, name="elsewhere")
    token = JoinToken.objects.create(name="x", secret_sha256="0" * 64, created_by_name="t", expires_at=timezone.now())
    with pytest.raises(PermissionDenied):
        join.token_revoke(actor=user, token=token)
    assert JoinToken.objects.get(pk=token.pk).revoked_at is None


def joined_host(name: str) -> tuple[Host, JoinToken]:
    """A host as `manage.py host join` leaves it (made here: a join is refused on SQLite)."""
    host = Host.objects.create(name=name, agent=True)
    token = JoinToken.objects.create(
        name=name, secret_sha256=join.digest(name), created_by_name="t", expires_at=timezone.now(), used_at=timezone.now(), host=host
    )
    return host, token


@pytest.mark.django_db(transaction=True)  # the heartbeat's thread has a connection of its own
def test_an_agents_heartbeat_stops_it_once_its_token_is_revoked(fake_engine, settings, admin_user):
    settings.PANEL_HOST, settings.PANEL_HOST_AGENT = "far", True
    host, token = joined_host("far")
    stopped = threading.Event()

    def run_for(seconds: float) -> bool:
        stop = threading.Event()
        thread = threading.Thread(target=heartbeat.loop, args=(stop,), kwargs={"every": 0.05, "on_revoked": stopped.set})
        thread.start()
        thread.join(seconds)
        ended = not thread.is_alive()
        stop.set()
        thread.join(5)
        return ended

    assert not run_for(0.5) and not stopped.is_set()  # enabled: it beats on
    assert Host.objects.get(pk=host.pk).last_heartbeat is not None
    join.token_revoke(actor=admin_user, token=token)
    assert Host.objects.get(pk=host.pk).enabled is False
    assert run_for(5) and stopped.is_set()
    event = AuditEvent.objects.get(action="host.token_revoked")
    assert event.target == "host far" and event.details["host_disabled"] is True


@pytest.mark.django_db
def test_a_host_disabled_by_hand_keeps_its_agent(fake_engine, settings):
    settings.PANEL_HOST, settings.PANEL_HOST_AGENT = "far", True
    host, _token = joined_host("far")
    Host.objects.filter(pk=host.pk).update(enabled=False)  # disabled, but its token stands
    assert not join.revoked("far")


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_the_agent_started_by_host_agent_stops_when_its_token_is_revoked(docker_engine, admin_user, tmp_path):
    """`manage.py host agent` for real: Procfile.host's two workers, the events watcher and the
    agent-activity receiver and the credential proxy under the supervisor; a revoke disables the
    host, and the watcher's
    heartbeat stops them all."""
    name = "agent59"
    _host, token = joined_host(name)
    env_file = tmp_path / "host.env"
    join.write_env_file(env_file, {"PANEL_HOST": name, "PANEL_HOST_AGENT": "true", "PANEL_INSTANCE": settings.PANEL_INSTANCE})
    var = settings.VAR_DIR / f"agent-{name}"
    agent = Proc("host-agent", [sys.executable, "manage.py", "host", "agent"], PANEL_AGENT_ENV_FILE=str(env_file))
    try:
        agent.wait_for_line("watching Docker events", timeout=60)
        wait_for(lambda: agent.output().count("ready.") >= 2, timeout=60, what="the agent's two workers")
        out = agent.output()
        assert (
            f".> {settings.CELERY_TASK_DEFAULT_QUEUE}-host-{name} " in out
            and f".> {settings.CELERY_TASK_DEFAULT_QUEUE}-host-{name}-jobs " in out
        )
        assert f".> {settings.CELERY_TASK_DEFAULT_QUEUE} " not in out and f".> {settings.CELERY_JOBS_QUEUE} " not in out  # its own only
        assert Host.objects.get(name=name).last_heartbeat is not None
        children = subprocess.run(["pgrep", "-P", str(agent.proc.pid)], capture_output=True, text=True).stdout.split()
        # the two workers, the events watcher, the agent-activity receiver, the proxy
        assert len(children) == 5, agent.output()[-3000:]
        join.token_revoke(actor=admin_user, token=token)
        revoked_at = time.monotonic()
        assert agent.proc.wait(timeout=40) == 0, agent.output()[-3000:]
        assert time.monotonic() - revoked_at < 40
        assert "was revoked, deleted or made anew without an agent: the agent stops" in agent.output()
        for pid in children:
            wait_for(
                lambda pid=pid: subprocess.run(["kill", "-0", pid], capture_output=True).returncode != 0, timeout=15, what=f"{pid} gone"
            )
    finally:
        if agent.proc.poll() is None:
            agent.stop()
        else:
            agent.log.close()
        shutil.rmtree(var, ignore_errors=True)


@pytest.mark.django_db
def test_the_page_shows_the_token_to_paste_not_on_a_command_line(logged_in, monkeypatch):
    """The token carries the panel's database and Redis passwords and its keys, which outlive
    the token: on a command line they would stay in the shell's history and show in the process
    list of the new machine. The page says `host join -` and shows the token to paste."""
    from hosts import views

    text = "ccpj1.eyJ0ZXN0IjoidG9rZW4ifQ"
    monkeypatch.setattr(views.join, "token_create", lambda **kw: (JoinToken(name="two"), text))
    page = logged_in.post("/hosts/tokens/new/", {"name": "two"})
    body = page.content.decode()
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    assert f'<code id="join-token">{text}</code>' in body
    assert "manage.py host join -" in body
    assert f"host join {text}" not in body


@pytest.mark.django_db
def test_an_agent_whose_host_was_deleted_or_made_anew_stops(fake_engine, settings):
    """Deleted on the Hosts page, its agent beat on (writing nothing) and kept reading the queues
    of its name: a host made again under that name, served by the panel's workers, would have
    had its tasks taken by the old agent and run on that machine's engine."""
    settings.PANEL_HOST, settings.PANEL_HOST_AGENT = "far", True
    host, _token = joined_host("far")
    assert not join.revoked("far")
    host.delete()
    assert join.revoked("far")
    Host.objects.create(name="far", docker_url="unix:///var/run/docker.sock")  # made anew, no agent
    assert join.revoked("far")
