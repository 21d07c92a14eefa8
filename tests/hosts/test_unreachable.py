"""A host that stops answering: its sandboxes are shown "unreachable" (never changed, never
destroyed), no action is queued for them, the other hosts' sandboxes are served as before, and
all of it comes back when the host beats again; each change audited."""

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from hosts import health
from hosts.models import Host
from sandboxes import services
from sandboxes.models import Sandbox

pytestmark = pytest.mark.django_db
CLI = services.SystemActor("test")


@pytest.fixture
def two_hosts(make_sandbox, fake_engine, clean_workspace):
    """A sandbox on "local" and one on a host "far" (placed there as an agent's host would be)."""
    near = make_sandbox("near")
    far_box = make_sandbox("far-box")
    far = Host.objects.create(name="far", docker_url="tcp://198.18.99.1:2376")
    Sandbox.objects.filter(pk=far_box.pk).update(host=far)
    beat(far, seconds_ago=1)
    return near, Sandbox.objects.get(pk=far_box.pk), far


def beat(host: Host, *, seconds_ago: float, error: str = "") -> None:
    Host.objects.filter(pk=host.pk).update(last_heartbeat=timezone.now() - timedelta(seconds=seconds_ago), last_error=error)
    host.refresh_from_db()


def shown(client, sandbox: Sandbox) -> str:
    page = client.get("/").content.decode()
    row = page[page.index(f'id="sandbox-{sandbox.pk}"') :]
    return row[: row.index("</tr>")]


def test_a_host_that_never_beat_is_not_unreachable(db):
    assert health.unreachable_reason(Host(name="new")) == ""


def test_a_stale_or_failing_host_is_unreachable_with_the_reason(two_hosts):
    _, _, far = two_hosts
    assert health.unreachable_reason(far) == ""
    beat(far, seconds_ago=60)
    assert "no heartbeat for 60 s" in health.unreachable_reason(far)
    beat(far, seconds_ago=1, error="Docker engine is not reachable: connection refused")
    assert "connection refused" in health.unreachable_reason(far)


def test_its_sandboxes_show_unreachable_and_take_no_action_while_the_others_are_served(two_hosts, logged_in):
    near, far_box, far = two_hosts
    beat(far, seconds_ago=60)
    row = shown(logged_in, far_box)
    assert 'data-status="unreachable"' in row and "no heartbeat" in row and "It was running when last seen" in row
    assert "<button" not in row  # nothing offered
    near_row = shown(logged_in, near)
    assert 'data-status="running"' in near_row and "<button" in near_row
    with pytest.raises(services.SandboxError, match="unreachable"):
        services.sandbox_request_action(actor=CLI, sandbox=far_box, action="stop", enqueue=False)
    with pytest.raises(services.SandboxError, match="unreachable"):
        services.sandbox_request_action(actor=CLI, sandbox=far_box, action="destroy", enqueue=False)
    far_box.refresh_from_db()
    assert (far_box.status, far_box.pending_action) == ("running", "")  # never changed, never destroyed
    assert not AuditEvent.objects.filter(action__in=["sandbox.stop", "sandbox.destroy"]).exists()
    response = logged_in.post(f"/sandboxes/{far_box.pk}/stop/")
    assert response.status_code in (302, 400, 409)
    far_box.refresh_from_db()
    assert far_box.pending_action == ""
    # The near one is acted on as before.
    services.sandbox_request_action(actor=CLI, sandbox=near, action="stop", enqueue=False)
    # Beats again: shown as it was, and acted on.
    beat(far, seconds_ago=0)
    assert 'data-status="running"' in shown(logged_in, far_box)
    services.sandbox_request_action(actor=CLI, sandbox=far_box, action="stop", enqueue=False)


def test_the_watch_audits_each_change_once(two_hosts):
    _, _, far = two_hosts
    watch = health.Watch()
    assert watch.check() == ([], [])  # the first look only learns
    beat(far, seconds_ago=60)
    lost, back = watch.check()
    assert [h.name for h in lost] == ["far"] and back == []
    assert watch.check() == ([], [])  # said once
    beat(far, seconds_ago=0)
    lost, back = watch.check()
    assert lost == [] and [h.name for h in back] == ["far"]
    actions = list(AuditEvent.objects.filter(target="host far").order_by("pk").values_list("action", flat=True))
    assert actions == ["host.unreachable", "host.recovered"]
    unreachable = AuditEvent.objects.get(action="host.unreachable")
    assert "no heartbeat" in unreachable.details["reason"]


# --- the other ways into a sandbox: terminals, files, checkpoints, quotas ----------------------


def _other_ways(sandbox: Sandbox, actor):
    """Every synchronous way the pages and the CLI reach a sandbox besides its actions."""
    import io

    from sandboxes.services import terminals, transfer
    from storage import services as storage
    from storage.models import Checkpoint

    checkpoint = Checkpoint(sandbox=sandbox, snapshot="20260101-000000-abcdef12")
    return {
        "terminal": lambda: terminals.terminal_open(actor=actor, sandbox=sandbox),
        "upload": lambda: transfer.upload(actor=actor, sandbox=sandbox, name="f.txt", source=io.BytesIO(b"x")),
        "download": lambda: transfer.download(actor=actor, sandbox=sandbox, path=""),
        "checkpoint": lambda: storage.checkpoint_create(actor=actor, sandbox=sandbox, label="x"),
        "rollback": lambda: storage.rollback(actor=actor, sandbox=sandbox, checkpoint=checkpoint),
        "quota": lambda: storage.set_disk_quota(actor=actor, sandbox=sandbox, disk_mb=2048),
        "delete checkpoint": lambda: storage.checkpoint_delete(actor=actor, checkpoint=checkpoint),
    }


def test_no_terminal_file_checkpoint_or_quota_change_on_an_unreachable_hosts_sandbox(two_hosts, admin_user):
    near, far_box, far = two_hosts
    Sandbox.objects.filter(pk=far_box.pk).update(container_id="c" * 64)
    far_box.refresh_from_db()
    beat(far, seconds_ago=60)
    from sandboxes.models import TerminalSession

    for way, call in _other_ways(far_box, admin_user).items():
        with pytest.raises(services.SandboxError, match="unreachable") as refused:
            call()
        assert "no heartbeat" in str(refused.value), way
    assert not TerminalSession.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="transfer.").exists()


def test_an_agents_sandbox_files_are_never_read_or_written_on_the_panels_disk(two_hosts, admin_user):
    """Its folders are on the agent's machine: a folder of the same name here is not its own."""
    near, far_box, far = two_hosts
    Host.objects.filter(pk=far.pk).update(agent=True, docker_url="", panel_url="tcp://198.18.99.1:2376")
    far_box = Sandbox.objects.get(pk=far_box.pk)
    ways = _other_ways(far_box, admin_user)
    del ways["terminal"]  # the engine's TLS endpoint carries it
    for way, call in ways.items():
        with pytest.raises(services.SandboxError, match="on host far") as refused:
            call()
        assert "machine" in str(refused.value), way
    assert not AuditEvent.objects.filter(action__startswith="transfer.").exists()


def test_no_backup_or_restore_is_queued_for_an_unreachable_hosts_sandbox(two_hosts, admin_user):
    """A backup or restore claims the sandbox and waits in its host's queue: while the host is
    away it would hold the sandbox busy for nothing; refused, as actions are."""
    from backups.models import Backup
    from backups.services import backup as backups
    from backups.services import restore as restores

    near, far_box, far = two_hosts
    done = Backup.objects.create(
        sandbox=far_box, team=far_box.team, sandbox_name=far_box.name, file_name=f"{far_box.name}-20260101-000000.tar.gz",
        status=Backup.Status.DONE, sha256="0" * 64, config={}, created_by_name="test",
    )  # fmt: skip
    done.path.parent.mkdir(parents=True, exist_ok=True)
    done.path.write_bytes(b"x")
    try:
        beat(far, seconds_ago=60)
        with pytest.raises(services.SandboxError, match="unreachable"):
            backups.backup_request(actor=admin_user, sandbox=far_box, enqueue=False)
        with pytest.raises(services.SandboxError, match="unreachable"):
            restores.restore_request(actor=admin_user, backup=done, sandbox=far_box, enqueue=False)
        far_box.refresh_from_db()
        assert (far_box.status, far_box.pending_action) == ("running", "")
        assert Backup.objects.filter(sandbox=far_box).count() == 1
        beat(far, seconds_ago=0)
        backups.backup_request(actor=admin_user, sandbox=far_box, enqueue=False)
    finally:
        done.path.unlink(missing_ok=True)
