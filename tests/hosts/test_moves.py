"""Moves between hosts, fast: what is refused (and that a refusal changes nothing), where each
step's task goes, and that a move failing once its row named the target puts it back on its
source as it was. The move itself, files and all, is tests/hosts/test_move_host.py."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from audit.models import AuditEvent
from hosts import queues
from hosts import services as host_services
from hosts.models import Host
from sandboxes import services
from sandboxes.models import Move, Sandbox
from sandboxes.services import moves
from tests.support.docker import TEST_IMAGE

pytestmark = pytest.mark.django_db
CLI = services.SystemActor("test")
S = Sandbox.Status


@pytest.fixture
def local(fake_engine, clean_workspace):
    host = host_services.local_host()
    Host.objects.filter(pk=host.pk).update(memory_mb=8192, disk_mb=1_000_000, labels=[])
    return host


@pytest.fixture
def far(local):
    """A host served by its agent on another machine, the panel reaching its engine over TLS."""
    return Host.objects.create(
        name="far",
        agent=True,
        panel_url="tcp://198.19.0.2:2376",
        cpus=Decimal(4),
        memory_mb=4096,
        disk_mb=1_000_000,
        last_heartbeat=timezone.now(),
        engine_version="27.0",
    )


@pytest.fixture
def stopped(local, team):
    box = services.sandbox_create(
        actor=CLI, team=team, name="mover", image=TEST_IMAGE, memory_mb=512, cpus=Decimal(1), network_mode="none", enqueue=False
    )
    Sandbox.objects.filter(pk=box.pk).update(
        status=S.STOPPED, pending_action="", host_path_ids={"/x": [[1, 2]]}, disk_group="g-1", container_id="abc"
    )
    return Sandbox.objects.get(pk=box.pk)


def refused(sandbox: Sandbox, target: str = "far") -> str:
    before = Sandbox.objects.filter(pk=sandbox.pk).values().get()
    with pytest.raises(services.SandboxError) as caught:
        moves.move_request(actor=CLI, sandbox=sandbox, target_name=target, enqueue=False)
    assert Sandbox.objects.filter(pk=sandbox.pk).values().get() == before  # nothing changed
    assert not Move.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="sandbox.move").exists()
    return str(caught.value)


def test_a_running_sandbox_is_refused(stopped, far):
    Sandbox.objects.filter(pk=stopped.pk).update(status=S.RUNNING)
    assert "only a stopped sandbox moves" in refused(stopped)


def test_a_sandbox_held_by_an_incident_busy_or_being_backed_up_is_refused(stopped, far):
    Sandbox.objects.filter(pk=stopped.pk).update(on_hold=True)
    assert "incident" in refused(stopped)
    Sandbox.objects.filter(pk=stopped.pk).update(on_hold=False, pending_action="backup")
    assert "busy" in refused(stopped)
    # A backup that let go of the claim once its snapshot was taken, still writing.
    from backups.services.backup import new_backup_row

    Sandbox.objects.filter(pk=stopped.pk).update(pending_action="")
    running = new_backup_row(CLI, stopped, "manual")
    assert "being written" in refused(stopped)
    running.delete()


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"enabled": False}, "disabled"),
        ({"draining": True}, "draining"),
        ({"last_heartbeat": timezone.now() - timedelta(hours=1)}, "unreachable"),
        ({"memory_mb": 256}, "lacks the capacity"),
        ({"panel_url": ""}, "no way to its engine"),
    ],
)
def test_a_host_that_cannot_take_it_is_refused(stopped, far, change, said):
    Host.objects.filter(pk=far.pk).update(**change)
    assert said in refused(stopped)


def test_its_own_host_an_unknown_one_and_two_hosts_on_this_machine_are_refused(stopped, far):
    assert "already" in refused(stopped, "local")
    assert "no host named" in refused(stopped, "nowhere")
    host_services.host_create(
        actor=CLI, name="beside", docker_url="unix:///var/run/docker.sock", cpus=Decimal(2), memory_mb=4096, disk_mb=10**6
    )
    assert "nothing to move" in refused(stopped, "beside")


def test_a_move_claims_the_sandbox_and_each_step_goes_to_the_machine_that_does_it(stopped, far):
    move = moves.move_request(actor=CLI, sandbox=stopped, target_name="far", enqueue=False)
    box = Sandbox.objects.get(pk=stopped.pk)
    assert box.pending_action == "move" and box.status == S.STOPPED and box.host.name == "local"
    assert move.source_state == {"host_path_ids": {"/x": [[1, 2]]}, "disk_group": "g-1", "container_id": "abc", "warm_slot": ""}
    event = AuditEvent.objects.get(action="sandbox.move_requested")
    assert event.details == {"from": "local", "to": "far"}

    def queue(step: str) -> str:
        return queues.route_task(queues.MOVE_TASK, (move.pk, step), {}, {})["queue"]

    assert queue("archive") == queue("cleanup") == queues.jobs_queue("local")
    assert queue("transfer") == settings.CELERY_JOBS_QUEUE  # the panel's machine reaches both engines
    assert queue("restore") == queues.jobs_queue("far")
    # Another move is refused while this one holds it.
    assert "busy" in str(pytest.raises(services.SandboxError, moves.move_request, actor=CLI, sandbox=box, target_name="far").value)


def test_a_move_that_fails_on_the_target_puts_the_sandbox_back_on_its_source_as_it_was(stopped, far):
    move = moves.move_request(actor=CLI, sandbox=stopped, target_name="far", enqueue=False)
    # The restore step had pointed the row at the target before it failed.
    Sandbox.objects.filter(pk=stopped.pk).update(host=far, host_path_ids={}, disk_group="", container_id="")
    moves._fail(Move.objects.get(pk=move.pk), "The move failed at its restore: boom")
    box = Sandbox.objects.get(pk=stopped.pk)
    assert box.host.name == "local" and box.status == S.STOPPED and box.pending_action == ""
    assert (box.host_path_ids, box.disk_group, box.container_id) == ({"/x": [[1, 2]]}, "g-1", "abc")
    assert "boom" in box.status_detail
    move.refresh_from_db()
    assert (move.status, move.step) == (Move.Status.FAILED, Move.Step.CLEANUP)
    failed = AuditEvent.objects.get(action="sandbox.move_failed")
    assert failed.details["from"] == "local" and failed.details["to"] == "far" and "boom" in failed.details["detail"]
    assert not AuditEvent.objects.filter(action="sandbox.moved").exists()


def test_the_command_line_moves_through_the_same_service(stopped, far):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="name the host"):
        call_command("sandbox", "move", "mover")
    Sandbox.objects.filter(pk=stopped.pk).update(status=S.RUNNING)
    with pytest.raises(CommandError, match="only a stopped sandbox moves"):
        call_command("sandbox", "move", "mover", "--host", "far")
    Sandbox.objects.filter(pk=stopped.pk).update(status=S.STOPPED)
    call_command("sandbox", "move", "mover", "--host", "far")
    assert Sandbox.objects.get(pk=stopped.pk).pending_action == "move"
    assert Move.objects.get().target.name == "far"


def test_the_page_offers_the_move_to_operators_only(client, django_user_model, team, stopped, far):
    from teams.models import Membership

    def member(name: str, role: str):
        user = django_user_model.objects.create_user(name, password="pw-123456789")
        Membership.objects.create(user=user, team=team, role=role)
        return user

    client.force_login(member("look", "viewer"))
    assert 'id="move-host"' not in client.get(f"/sandboxes/{stopped.pk}/").content.decode()
    assert client.post(f"/sandboxes/{stopped.pk}/move/", {"host": "far"}).status_code == 403
    assert Sandbox.objects.get(pk=stopped.pk).pending_action == "" and not Move.objects.exists()
    client.force_login(member("op", "operator"))
    page = client.get(f"/sandboxes/{stopped.pk}/").content.decode()
    assert '<option value="far">far</option>' in page and '<option value="local">' not in page
    assert client.post(f"/sandboxes/{stopped.pk}/move/", {"host": "far"}).status_code == 302
    assert Sandbox.objects.get(pk=stopped.pk).pending_action == "move"
    assert AuditEvent.objects.get(action="sandbox.move_requested").actor_name == "op"


def test_a_host_a_move_named_is_refused_deletion_saying_why(stopped, far):
    """A move's record keeps its hosts (as a sandbox's row does): deleting one is refused with a
    reason, on the page and in the API, never an error page; the hosts page does not offer it."""
    from hosts.selectors import host_rows

    spare = host_services.host_create(actor=CLI, name="spare", cpus=Decimal(1), memory_mb=1024, disk_mb=10**6)
    Move.objects.create(sandbox=stopped, source=stopped.host, target=spare, status=Move.Status.FAILED, step=Move.Step.ENDED)
    assert {row.host.name: row.deletable for row in host_rows()}["spare"] is False
    with pytest.raises(host_services.HostError) as caught:
        host_services.host_delete(actor=CLI, host=spare)
    assert "move" in str(caught.value) and Host.objects.filter(pk=spare.pk).exists()
    assert not AuditEvent.objects.filter(action="host.delete").exists()


def test_a_move_whose_sandbox_is_destroyed_between_two_steps_ends_instead_of_running_for_ever(stopped, far):
    """Destroy preempts a move: the move's next step finds the sandbox is no longer its own and
    ends the move failed, its clean-up queued (before, it returned and the move stayed running,
    its transfer volumes left on both engines)."""
    move = moves.move_request(actor=CLI, sandbox=stopped, target_name="far", enqueue=False)
    services.sandbox_request_action(actor=CLI, sandbox=stopped, action="destroy", enqueue=False)
    moves.move_perform(move_id=move.pk, step=Move.Step.ARCHIVE)
    move.refresh_from_db()
    assert (move.status, move.step) == (Move.Status.FAILED, Move.Step.CLEANUP) and "destroyed" in move.detail
    box = Sandbox.objects.get(pk=stopped.pk)
    assert (box.status, box.pending_action, box.host.name) == (S.DESTROYING, "destroy", "local")  # Destroy's, untouched
    assert AuditEvent.objects.filter(action="sandbox.move_failed").count() == 1


def test_a_sandbox_destroyed_on_the_target_during_its_move_leaves_nothing_on_the_source(stopped, far):
    """Destroy took the sandbox once its row named the target (the destroy ran there): the
    source's clean-up removes the sandbox's old copy, which nothing else would; its archive, a
    backup, stays."""
    from sandboxes import workspace

    workspace.workspace_create(stopped.name, str(stopped.uuid))
    assert workspace.read_marker(stopped.name) == str(stopped.uuid)
    move = moves.move_request(actor=CLI, sandbox=stopped, target_name="far", enqueue=False)
    Sandbox.objects.filter(pk=stopped.pk).update(host=far, host_path_ids={}, disk_group="", container_id="")  # the restore's step
    services.sandbox_request_action(actor=CLI, sandbox=Sandbox.objects.get(pk=stopped.pk), action="destroy", enqueue=False)
    moves._ended(Move.objects.get(pk=move.pk), ok=False, detail="The sandbox was taken over (destroyed) during its move.")
    Sandbox.objects.filter(pk=stopped.pk).update(status=S.DESTROYED, pending_action="")  # done there
    moves.move_perform(move_id=move.pk, step=Move.Step.CLEANUP)
    assert workspace.read_marker(stopped.name) is None
    move.refresh_from_db()
    assert move.step == Move.Step.ENDED and "Left on the source" not in move.detail


def test_a_moved_sandboxs_clean_up_removes_its_staged_download_on_the_source(stopped, far, fake_engine):
    """A download staged on the source (backups.services.downloads: a backup's archive, all its
    files, in a volume of the source's engine) goes with the rest of its old copy: nothing else
    would remove it once the sandbox lives on the target (its Destroy runs there)."""
    from backups.services.downloads import download_volume
    from sandboxes.services.specs import labels

    fake_engine.ensure_volume(download_volume(stopped), labels={**labels(stopped), moves.LABEL_TRANSFER: "download"})
    fake_engine.ensure_volume("not-its-own", labels={moves.LABEL_TRANSFER: "download"})
    move = moves.move_request(actor=CLI, sandbox=stopped, target_name="far", enqueue=False)
    Sandbox.objects.filter(pk=stopped.pk).update(host=far, host_path_ids={}, disk_group="", container_id="")  # the restore's step
    moves._ended(Move.objects.get(pk=move.pk), ok=True, detail="Moved.")
    moves.move_perform(move_id=move.pk, step=Move.Step.CLEANUP)
    assert download_volume(stopped) not in fake_engine.volumes and "not-its-own" in fake_engine.volumes
    move.refresh_from_db()
    assert move.step == Move.Step.ENDED and "Left on the source" not in move.detail


def test_a_move_whose_target_went_away_before_its_restore_gives_the_sandbox_back(stopped, far):
    """The restore waits on the target's queue; when its worker is gone and the target host is
    unreachable, the resync ends the move (the sandbox back on its source, as it was) instead of
    queueing the restore again for as long as that host is away, the sandbox held meanwhile."""
    move = moves.move_request(actor=CLI, sandbox=stopped, target_name="far", enqueue=False)
    Move.objects.filter(pk=move.pk).update(step=Move.Step.RESTORE, archive="a.tar.gz", sha256="0" * 64)
    Host.objects.filter(pk=far.pk).update(last_heartbeat=timezone.now() - timedelta(hours=1))
    moves.resume_move(Sandbox.objects.get(pk=stopped.pk))
    move.refresh_from_db()
    assert (move.status, move.step) == (Move.Status.FAILED, Move.Step.CLEANUP) and "unreachable" in move.detail
    box = Sandbox.objects.get(pk=stopped.pk)
    assert (box.host.name, box.pending_action, box.status, box.container_id) == ("local", "", S.STOPPED, "abc")


def test_an_incident_declared_during_a_move_keeps_the_sandbox_on_its_source(stopped, far):
    """An incident's snapshot commits the container and reads its logs on the sandbox's host: a
    move carried on while it holds the sandbox would have its source's clean-up remove that
    evidence. The move's next step ends it instead, the sandbox as it was; the restore refuses
    to point the row at the target once it is held."""
    move = moves.move_request(actor=CLI, sandbox=stopped, target_name="far", enqueue=False)
    Sandbox.objects.filter(pk=stopped.pk).update(on_hold=True)  # incident_declare: its own claim refused (busy)
    moves.move_perform(move_id=move.pk, step=Move.Step.ARCHIVE)
    move.refresh_from_db()
    assert (move.status, move.step) == (Move.Status.FAILED, Move.Step.CLEANUP) and "incident" in move.detail
    box = Sandbox.objects.get(pk=stopped.pk)
    assert (box.host.name, box.pending_action, box.on_hold, box.container_id) == ("local", "", True, "abc")

    Sandbox.objects.filter(pk=stopped.pk).update(on_hold=False)
    again = moves.move_request(actor=CLI, sandbox=box, target_name="far", enqueue=False)
    Sandbox.objects.filter(pk=stopped.pk).update(on_hold=True)
    with pytest.raises(moves.MoveError, match="incident"):
        moves._onto_target(again, Sandbox.objects.get(pk=stopped.pk))
    assert Sandbox.objects.get(pk=stopped.pk).host.name == "local"


def test_a_checkpoint_that_ends_just_before_the_claim_is_seen_and_the_move_refused(stopped, far, monkeypatch):
    """The first look and the claim are two moments: a checkpoint taken between them (its own
    claim released just before the move's) is judged again once the move holds the sandbox, and
    refused with nothing changed; moved past, its snapshot would go with the source's pool group."""
    from storage.models import Checkpoint

    taken = moves.claim

    def checkpoint_then_claim(**kwargs):
        Checkpoint.objects.create(sandbox=stopped, snapshot="20260101-000000-between", created_by_name="test")
        return taken(**kwargs)

    monkeypatch.setattr(moves, "claim", checkpoint_then_claim)
    assert "has checkpoints" in refused(stopped)


def test_a_restore_whose_archive_comes_cut_short_leaves_nothing_on_the_target(stopped, far, fake_engine, monkeypatch):
    """The target's copy of the archive is cut short (a stream that ends early): the move ends
    failed, the sandbox on its source as it was, and neither the half-written copy in the
    target's backup folder nor the transfer volume (all the sandbox's files) is left there."""
    import tarfile

    from backups.models import Backup
    from backups.services import backup_root
    from backups.services.backup import new_backup_row

    move = moves.move_request(actor=CLI, sandbox=stopped, target_name="far", enqueue=False)
    row = new_backup_row(CLI, stopped, Backup.Kind.MANUAL)
    Backup.objects.filter(pk=row.pk).update(status=Backup.Status.DONE)
    Move.objects.filter(pk=move.pk).update(step=Move.Step.RESTORE, backup_id=row.pk, archive=row.file_name, sha256="0" * 64)
    header = tarfile.TarInfo(row.file_name)
    header.size = 10 << 20

    def cut_short(container_id: str, path: str):
        yield header.tobuf(format=tarfile.PAX_FORMAT)
        yield b"x" * (1 << 20)  # and no more

    monkeypatch.setattr(fake_engine, "read_archive", cut_short, raising=False)
    moves.move_perform(move_id=move.pk, step=Move.Step.RESTORE)
    move.refresh_from_db()
    assert move.status == Move.Status.FAILED and "restore" in move.detail, move.detail
    box = Sandbox.objects.get(pk=stopped.pk)
    assert (box.host.name, box.pending_action, box.container_id) == ("local", "", "abc")
    assert not (backup_root() / f".{row.file_name}.move-{move.pk}").exists() and not (backup_root() / row.file_name).exists()
    assert moves.transfer_volume(box) not in fake_engine.volumes
