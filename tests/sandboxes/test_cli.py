"""`manage.py sandbox VERB NAME` drives the same services as the web panel."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from backups.models import Backup
from sandboxes.models import Sandbox
from tests.support.docker import docker_cli

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command("sandbox", *args, stdout=out)
    return out.getvalue()


@pytest.mark.docker
def test_cli_verbs(team, test_image, clean_docker, monkeypatch):
    assert "clirun: running" in run("create", "clirun", "--image", test_image, "--memory-mb", "256", "--cpus", "1")
    assert "clirun" in run("list") and "running" in run("list")
    sandbox = Sandbox.objects.get(name="clirun")
    docker_cli("exec", sandbox.container_id, "sh", "-c", "echo hello-from-sandbox > /proc/1/fd/1")
    assert "hello-from-sandbox" in run("logs", "clirun")
    assert "clirun: stopped" in run("stop", "clirun")
    assert "clirun: running" in run("start", "clirun")
    assert "clirun: stopped" in run("reset", "clirun")
    assert "clirun: stopped" in run("clean", "clirun")
    assert "clirun: running" in run("start", "clirun")
    backup_line = run("backup", "clirun")
    assert "clirun-" in backup_line and ".tar.gz" in backup_line and "sha256" in backup_line
    assert Backup.objects.get(sandbox=sandbox).status == "done"

    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(CommandError, match="Not confirmed"):
        run("destroy", "clirun")
    assert Sandbox.objects.get(name="clirun").status == "running"
    assert "clirun: destroyed" in run("destroy", "clirun", "--yes")
    actors = set(AuditEvent.objects.filter(target="clirun", action="sandbox.create").values_list("actor_name", flat=True))
    assert len(actors) == 1 and actors.pop().startswith("cli:")


@pytest.mark.docker
def test_cli_errors_are_messages(team, test_image, clean_docker):
    with pytest.raises(CommandError, match="No sandbox named"):
        run("stop", "nobody")
    with pytest.raises(CommandError, match="needs a sandbox name"):
        run("start")


@pytest.mark.docker
def test_clean_removes_the_sandboxes_own_images_and_keeps_data(make_sandbox, clean_docker, test_image):
    from sandboxes import engine

    sandbox = make_sandbox("cleaner")
    (sandbox.workspace_path / "Projects" / "keep.txt").write_text("data")
    # A snapshot as the incident flow will make one: `docker commit` keeps the container's labels.
    docker_cli("commit", sandbox.container_id, "ccpanel-test/cleaner-snap:1")
    docker_cli("tag", test_image, "ccpanel-test/unrelated:1")
    try:
        assert "cleaner: stopped" in run("clean", "cleaner")
        assert not engine.engine_for().image_exists("ccpanel-test/cleaner-snap:1")
        assert engine.engine_for().image_exists("ccpanel-test/unrelated:1")
        assert (sandbox.workspace_path / "Projects" / "keep.txt").read_text() == "data"
        assert engine.engine_for().volume_exists(sandbox.volume_name)
    finally:
        docker_cli("rmi", "-f", "ccpanel-test/cleaner-snap:1", "ccpanel-test/unrelated:1", check=False)


@pytest.mark.parametrize(
    "args, message",
    [
        (["Foo"], "lower-case letters"),
        (["a/b"], "lower-case letters"),
        (["."], "lower-case letters"),
        (["x" * 300], "lower-case letters"),
        (["zero", "--memory-mb", "0"], "at least 256 MB"),
        (["huge", "--cpus", "1e15"], "the CPUs this machine has"),
        (["nan", "--cpus", "NaN"], "a number"),
        (["petabyte", "--cpus", "1 PB"], r"--cpus: '1 PB' is not a number of CPUs: give one such as 1 or 2\.5 \(from 0\.25 to \d"),
        (["noteam", "--team", "nosuchteam"], "No team 'nosuchteam'"),
        (["badimage", "--image", "NOT/AN IMAGE"], "not a valid image reference"),
    ],
)
def test_the_cli_applies_the_forms_rules(team, fake_engine, clean_workspace, args, message):
    from teams.models import Team

    teams_before = Team.objects.count()
    with pytest.raises(CommandError, match=message):
        run("create", *args)
    assert not Sandbox.objects.exists() and Team.objects.count() == teams_before


def test_rows_no_page_could_render_are_refused_by_the_database(team):
    """Whatever path a row takes (a script, a shell), the database itself refuses the values that
    once broke the dashboard for everyone or left rows Destroy could not remove."""
    from decimal import Decimal

    from django.db import DataError, IntegrityError, transaction

    base = dict(team=team, image="x", memory_mb=256, cpus=Decimal("1"), pids_limit=100)
    for bad in (
        {"name": "a/b"},
        {"name": "."},
        {"name": "Foo"},
        {"name": "x" * 300},
        {"name": "ok", "cpus": Decimal("1e15")},
        {"name": "ok", "memory_mb": 0},
        {"name": "ok", "pids_limit": 0},
    ):
        with pytest.raises((IntegrityError, DataError)), transaction.atomic():  # DataError: PostgreSQL's column limits
            Sandbox.objects.create(**{**base, **bad})
    assert not Sandbox.objects.exists()
