"""The client drives a whole lifecycle against a running panel (Daphne, a real Celery worker, the
real Docker engine): create and wait until it runs, read the output the container printed (and
follow it until the sandbox stops), stop, start, destroy after typing the name; the audit trail
has each of those, by the token's user, through the API and the token. A backup is written,
listed, downloaded and restored into a new sandbox the same way."""

import hashlib
import json
import socket
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from audit.models import AuditEvent
from backups.models import Backup, Restore
from sandboxes.models import Sandbox
from tests.api.helpers import token_for
from tests.support.docker import TEST_IMAGE, docker_cli
from tests.support.paths import ROOT
from tests.support.processes import Proc, free_port
from tests.support.waiting import wait_for

from .test_cli import ccpanel

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def test_a_whole_lifecycle_from_the_command_line(panel_server, admin_user, team, clean_docker):
    token = token_for(admin_user, "admin")
    prefix = "_".join(token.split("_")[:2])
    run = lambda *args, **kw: ccpanel(*args, url=panel_server, token=token, **kw)  # noqa: E731

    code, out, err = run("sandbox", "create", "cli-life", "--team", str(team.pk), "--image", TEST_IMAGE, "--memory", "256m",
                         "--cpus", "1", "--network", "none", "--wait", "--timeout", "120", "--json")  # fmt: skip
    assert code == 0, err
    assert "Created cli-life" in err and token not in out + err
    made = Sandbox.objects.get(name="cli-life")
    assert made.status == "running" and made.container_id
    state = docker_cli("inspect", "-f", "{{.State.Running}}", made.container_id).stdout.strip()
    assert state == "true"

    docker_cli("exec", made.container_id, "sh", "-c", "echo printed-by-the-container > /proc/1/fd/1")
    code, out, err = run("sandbox", "logs", "cli-life", "--tail", "50")
    assert code == 0, err
    assert "printed-by-the-container" in out.splitlines()

    # Followed: the last line, then what is printed after, and it ends when the sandbox stops.
    environ = {"PYTHONPATH": str(ROOT / "client"), "CCPANEL_URL": panel_server, "CCPANEL_TOKEN": token, "CCPANEL_CONFIG": "/nonexistent"}
    follow = subprocess.Popen(
        [sys.executable, "-m", "ccpanel_client", "sandbox", "logs", str(made.pk), "-f", "--tail", "1"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    followed: list[str] = []
    reader = threading.Thread(target=lambda: followed.extend(line.rstrip("\n") for line in follow.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: followed == ["printed-by-the-container"], timeout=20, what="the followed log's last line")
        docker_cli("exec", made.container_id, "sh", "-c", "echo written-while-followed > /proc/1/fd/1")
        wait_for(lambda: len(followed) == 2, timeout=10, what="the line written while followed")
        assert follow.poll() is None  # still following
        code, out, err = run("sandbox", "stop", "cli-life", "--wait", "--timeout", "60")
        assert code == 0, err
        assert follow.wait(timeout=30) == 0, follow.stderr.read() if follow.stderr else ""
        reader.join(5)
    finally:
        follow.kill()
    assert followed == ["printed-by-the-container", "written-while-followed"]
    made.refresh_from_db()
    assert made.status == "stopped"
    assert docker_cli("inspect", "-f", "{{.State.Running}}", made.container_id).stdout.strip() == "false"

    code, out, err = run("sandbox", "start", str(made.pk), "--wait", "--timeout", "120", "--json")
    assert code == 0, err
    made.refresh_from_db()
    assert made.status == "running"

    # Destroy asks for the name, as the page does: a wrong one is refused and changes nothing.
    code, _out, err = run("sandbox", "destroy", str(made.pk), stdin="not-its-name\n")
    assert code == 1 and "confirm_name" in err
    assert Sandbox.objects.get(pk=made.pk).status == "running"
    code, _out, err = run("sandbox", "destroy", str(made.pk), "--wait", "--timeout", "120", stdin="cli-life\n")
    assert code == 0, err
    assert Sandbox.objects.get(pk=made.pk).status == "destroyed"
    assert docker_cli("inspect", made.container_id, check=False).returncode != 0
    code, _out, err = run("sandbox", "show", str(made.pk))
    assert code == 1 and "No such sandbox." in err

    events = AuditEvent.objects.filter(sandbox_uuid=made.uuid, details__via="api").order_by("seq")
    by_token = [e.action for e in events if e.actor_id == admin_user.pk and e.details.get("token") == prefix]
    for action in ("sandbox.create", "sandbox.stop", "sandbox.start", "sandbox.destroy"):
        assert action in by_token, (action, by_token)


def test_a_backup_is_written_listed_downloaded_and_restored_from_the_command_line(
    panel_server, admin_user, make_sandbox, clean_docker, tmp_path
):
    sandbox = make_sandbox("cli-kept", network_mode="none")
    (sandbox.workspace_path / "Projects" / "plan.md").write_text("the plan\n")
    token = token_for(admin_user, "operate")
    prefix = "_".join(token.split("_")[:2])
    run = lambda *args, **kw: ccpanel(*args, url=panel_server, token=token, **kw)  # noqa: E731

    code, out, err = run("sandbox", "backup", "cli-kept", "--wait", "--timeout", "120", "--json")
    assert code == 0, err
    shown = json.loads(out)
    backup = Backup.objects.get(pk=shown["id"])
    assert backup.status == "done" and shown["status"] == "done" and shown["sha256"] == backup.sha256 and backup.path.exists()

    code, out, err = run("backup", "list", "--sandbox", "cli-kept", "--json")
    assert code == 0 and [b["id"] for b in json.loads(out)] == [backup.pk], err

    target = tmp_path / "kept.tar.gz"
    code, _out, err = run("backup", "download", str(backup.pk), "-o", str(target))
    assert code == 0, err
    assert hashlib.sha256(target.read_bytes()).hexdigest() == backup.sha256
    with tarfile.open(target) as archive:
        member = archive.extractfile("workspace/Projects/plan.md")
        assert member is not None and member.read() == b"the plan\n"

    code, out, err = run("backup", "restore", str(backup.pk), "--into", "new", "--name", "cli-kept-copy", "--wait", "--timeout", "180")
    assert code == 0, err
    restore = Restore.objects.get(backup=backup)
    assert restore.status == "done" and restore.into_new
    copy = Sandbox.objects.get(name="cli-kept-copy")
    assert (copy.workspace_path / "Projects" / "plan.md").read_text() == "the plan\n"

    events = set(AuditEvent.objects.filter(details__via="api", details__token=prefix).values_list("action", flat=True))
    assert {"backup.requested", "backup.downloaded", "backup.restore_requested"} <= events, events


@pytest.fixture
def gunicorn_server(django_db_setup):
    """The pages served as `make run` serves them (gunicorn, scripts/gunicorn.conf.py), with one
    worker: what holds it shows at once."""
    port = free_port()
    p = Proc(
        "gunicorn",
        [str(ROOT / ".venv/bin/gunicorn"), "controlpanel.wsgi", "-c", str(ROOT / "scripts/gunicorn.conf.py")],
        PANEL_PORT=str(port),
        PANEL_WEB_WORKERS="1",
    )

    def up():
        assert p.proc.poll() is None, p.output()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(up, timeout=30, what="gunicorn")
        yield f"http://127.0.0.1:{port}"
    finally:
        p.stop()


def test_a_follow_under_gunicorn_streams_and_lets_go_of_its_worker_when_the_client_goes(
    gunicorn_server, admin_user, make_sandbox, clean_docker
):
    sandbox = make_sandbox("cli-follow", network_mode="none")
    docker_cli("exec", sandbox.container_id, "sh", "-c", "echo before-the-follow > /proc/1/fd/1")
    token = token_for(admin_user, "read")
    environ = {"PYTHONPATH": str(ROOT / "client"), "CCPANEL_URL": gunicorn_server, "CCPANEL_TOKEN": token, "CCPANEL_CONFIG": "/nonexistent"}
    follow = subprocess.Popen(
        [sys.executable, "-m", "ccpanel_client", "sandbox", "logs", "cli-follow", "-f", "--tail", "1"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    followed: list[str] = []
    threading.Thread(target=lambda: followed.extend(line.rstrip("\n") for line in follow.stdout), daemon=True).start()
    try:
        wait_for(lambda: followed == ["before-the-follow"], timeout=20, what="the last line")
        docker_cli("exec", sandbox.container_id, "sh", "-c", "echo while-followed > /proc/1/fd/1")
        wait_for(lambda: followed == ["before-the-follow", "while-followed"], timeout=10, what="the line, as it is written")
    finally:
        follow.kill()
        follow.wait(10)
    # The container stays quiet and running: only the client's going frees the one worker.
    started = time.monotonic()
    code, out, err = ccpanel("sandbox", "show", "cli-follow", url=gunicorn_server, token=token)
    assert code == 0, err
    assert time.monotonic() - started < 8, "the worker was held after its client went away"
    assert docker_cli("inspect", "-f", "{{.State.Running}}", sandbox.container_id).stdout.strip() == "true"
