"""Tasks end: every action finishes, fails with its reason, or is given up after a bounded number
of runs; a live worker's action is never run twice; a dead worker's is picked up again; and
Destroy is always possible."""

import shutil
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from audit.models import AuditEvent
from sandboxes import services
from sandboxes.models import Sandbox
from sandboxes.tasks import reconcile_all_task, sandbox_action_task
from tests.support.docker import TEST_IMAGE, docker_cli
from tests.support.fakes import FakeEngine
from tests.support.processes import kill_worker, start_worker
from tests.support.waiting import wait_for

ACTOR = services.SystemActor("test")
STUBBORN = f"ccpanel-{settings.PANEL_INSTANCE}/stubborn:1"


@pytest.fixture
def stubborn_image(test_image, clean_docker):
    """An image whose main process ignores SIGTERM, so that `stop` lasts the whole timeout."""
    cid = docker_cli("create", "--label", f"io.ccpanel.instance={settings.PANEL_INSTANCE}", test_image).stdout.strip()
    docker_cli("commit", "--change", 'CMD ["/bin/sh", "-c", "trap \\"\\" TERM; while :; do sleep 1; done"]', cid, STUBBORN)
    docker_cli("rm", cid)
    yield STUBBORN
    docker_cli("rmi", "-f", STUBBORN, check=False)


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_a_dead_workers_action_is_picked_up_again_and_a_live_ones_never_twice(make_sandbox, stubborn_image, settings, own_queue):
    settings.SANDBOX_STALE_SECONDS = 3
    sandbox = make_sandbox("stubborn", image=stubborn_image)
    first = start_worker("worker-a", own_queue)
    second = None
    try:
        services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="stop")
        wait_for(lambda: Sandbox.objects.get(pk=sandbox.pk).heartbeat_at, timeout=30, what="the stop to start")
        # Alive and working: the periodic check leaves it alone, and a duplicate delivery does not run it.
        time.sleep(4)  # longer than SANDBOX_STALE_SECONDS: only the heartbeat shows the worker is alive
        assert services.requeue_stale_actions() == 0
        sandbox_action_task.delay(sandbox.pk, "stop")
        time.sleep(1.5)
        assert Sandbox.objects.get(pk=sandbox.pk).attempts == 1

        kill_worker(first)
        time.sleep(4)  # the heartbeat stops; the claim goes stale
        assert Sandbox.objects.get(pk=sandbox.pk).pending_action == "stop"
        second = start_worker("worker-b", own_queue)
        back = time.monotonic()
        reconcile_all_task.apply()  # what beat runs every SANDBOX_RESYNC_SECONDS
        done = wait_for(
            lambda: (s := Sandbox.objects.get(pk=sandbox.pk)).status == "stopped" and not s.pending_action and s,
            timeout=60,
            what="the stop to be picked up again",
        )
        assert time.monotonic() - back < 60
        assert done.attempts == 2
        assert AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid, action="sandbox.stop.done").count() == 1
        assert docker_cli("inspect", "-f", "{{.State.Running}}", sandbox.container_id).stdout.strip() == "false"
    finally:
        if first.proc.poll() is None:
            first.stop()
        if second is not None:
            second.stop()


@pytest.mark.django_db
def test_an_action_whose_worker_keeps_dying_ends_in_error(make_sandbox, fake_engine, clean_workspace, settings):
    sandbox = make_sandbox("doomed")
    services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="stop", enqueue=False)
    stale = timezone.now() - timedelta(seconds=settings.SANDBOX_STALE_SECONDS + 5)
    # Three runs started and each lost its worker (its heartbeat stopped).
    Sandbox.objects.filter(pk=sandbox.pk).update(attempts=settings.SANDBOX_MAX_ATTEMPTS, heartbeat_at=stale)
    services.requeue_stale_actions()
    sandbox.refresh_from_db()
    assert sandbox.status == "error" and not sandbox.pending_action
    assert f"given up after {settings.SANDBOX_MAX_ATTEMPTS} attempts" in sandbox.status_detail
    # A delivery still in the queue finds nothing to do.
    services.sandbox_perform(sandbox_id=sandbox.pk, action="stop")
    assert Sandbox.objects.get(pk=sandbox.pk).status == "error"


@pytest.mark.django_db
def test_a_run_past_the_limit_ends_in_error_instead_of_running(make_sandbox, fake_engine, clean_workspace, settings):
    sandbox = make_sandbox("limit")
    services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="stop", enqueue=False)
    Sandbox.objects.filter(pk=sandbox.pk).update(attempts=settings.SANDBOX_MAX_ATTEMPTS)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="stop")
    sandbox.refresh_from_db()
    assert sandbox.status == "error" and "given up" in sandbox.status_detail
    assert fake_engine.container_state(sandbox.container_id).status == "running"  # the stop never ran


@pytest.mark.django_db
def test_an_unexpected_exception_ends_in_error_not_in_a_requeue(make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("broken")
    services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="stop", enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="stop")
    services.sandbox_request_action(actor=ACTOR, sandbox=Sandbox.objects.get(pk=sandbox.pk), action="start", enqueue=False)
    # A hand-edited row: the recorded identity of a folder is not a (device, inode) pair.
    ids = dict(sandbox.host_path_ids)
    ids[next(iter(ids))] = "garbage"
    Sandbox.objects.filter(pk=sandbox.pk).update(host_path_ids=ids)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    sandbox.refresh_from_db()
    assert sandbox.status == "error" and not sandbox.pending_action
    assert "failed unexpectedly (ValueError" in sandbox.status_detail
    assert services.requeue_stale_actions() == 0


@pytest.mark.django_db
def test_destroy_is_possible_while_another_action_is_stuck(make_sandbox, fake_engine, clean_workspace, team):
    stuck = services.sandbox_create(
        actor=ACTOR, team=team, name="stuck", image=TEST_IMAGE, memory_mb=256, cpus=1, network_mode="none", enqueue=False
    )
    assert stuck.status == "creating" and stuck.pending_action == "start"  # its task never ran
    services.sandbox_request_action(actor=ACTOR, sandbox=stuck, action="destroy", enqueue=False)
    services.sandbox_perform(sandbox_id=stuck.pk, action="start")  # the old task, delivered late: a no-op
    services.sandbox_perform(sandbox_id=stuck.pk, action="destroy")
    stuck.refresh_from_db()
    assert stuck.status == "destroyed" and not stuck.pending_action
    event = AuditEvent.objects.get(sandbox_uuid=stuck.uuid, action="sandbox.destroy")
    assert event.details["interrupted"] == "start"
    running = make_sandbox("running-busy")
    services.sandbox_request_action(actor=ACTOR, sandbox=running, action="stop", enqueue=False)
    services.sandbox_request_action(actor=ACTOR, sandbox=running, action="destroy", enqueue=False)
    with pytest.raises(services.SandboxError, match="busy"):
        services.sandbox_request_action(actor=ACTOR, sandbox=running, action="destroy", enqueue=False)
    services.sandbox_perform(sandbox_id=running.pk, action="destroy")
    assert Sandbox.objects.get(pk=running.pk).status == "destroyed"
    assert fake_engine.containers_claiming(name=running.container_name, sandbox_uuid=str(running.uuid)) == []


@pytest.mark.django_db
def test_destroy_removes_the_row_whatever_is_on_disk(make_sandbox, fake_engine, clean_workspace):
    gone = make_sandbox("gone-folder")
    fake_engine.remove_container(gone.container_id)
    shutil.rmtree(gone.workspace_path)
    foreign = make_sandbox("foreign-folder")
    (foreign.workspace_path / ".ccpanel-sandbox").write_text("someone-else\n")
    for sandbox in (gone, foreign):
        services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="destroy", enqueue=False)
        services.sandbox_perform(sandbox_id=sandbox.pk, action="destroy")
        assert Sandbox.objects.get(pk=sandbox.pk).status == "destroyed"
    assert foreign.workspace_path.exists()  # not provably this sandbox's: left, and said so
    assert "left in place" in Sandbox.objects.get(pk=foreign.pk).status_detail


class SlowStopEngine(FakeEngine):
    def stop(self, container_id: str, *, timeout: int) -> None:
        time.sleep(2.5)
        super().stop(container_id, timeout=timeout)


@pytest.mark.django_db(transaction=True)
def test_a_missed_heartbeat_is_retried_so_a_live_run_is_never_queued_again(team, clean_workspace, settings, monkeypatch):
    """One transient database error in the heartbeat thread (found by review) must not end the
    heartbeat: the run is alive, so it must not look stale."""
    import threading

    from sandboxes import engine
    from sandboxes.services import claims

    settings.SANDBOX_HEARTBEAT_SECONDS = 0.2
    settings.SANDBOX_STALE_SECONDS = 1
    fake = SlowStopEngine(images={TEST_IMAGE})
    real_now, failed = claims.timezone.now, []

    def flaky_now():
        if threading.current_thread().name.startswith("heartbeat-") and not failed:
            failed.append(1)
            raise RuntimeError("database is locked")
        return real_now()

    with engine.override(fake):
        sandbox = services.sandbox_create(
            actor=ACTOR, team=team, name="beating", image=TEST_IMAGE, memory_mb=256, cpus=1, network_mode="none", enqueue=False
        )
        services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
        services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="stop", enqueue=False)
        monkeypatch.setattr(claims.timezone, "now", flaky_now)
        worker = threading.Thread(target=services.sandbox_perform, kwargs={"sandbox_id": sandbox.pk, "action": "stop"})
        worker.start()
        time.sleep(1.8)  # past SANDBOX_STALE_SECONDS since the run began
        assert failed, "the heartbeat thread never met its error"
        assert services.requeue_stale_actions() == 0
        worker.join()
    assert Sandbox.objects.get(pk=sandbox.pk).status == "stopped"


class DestroyDuringProvision(FakeEngine):
    """While a start provisions the home volume, Destroy is requested and runs to its end."""

    sandbox_pk: int | None = None

    def ensure_volume(self, name, *, labels, device=""):
        if self.sandbox_pk is not None:
            pk, self.sandbox_pk = self.sandbox_pk, None
            sandbox = Sandbox.objects.get(pk=pk)
            services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="destroy", enqueue=False)
            services.sandbox_perform(sandbox_id=pk, action="destroy")
        return super().ensure_volume(name, labels=labels, device=device)


@pytest.mark.django_db(transaction=True)
def test_a_start_that_destroy_took_over_leaves_nothing_behind(team, clean_workspace):
    """Found by review: the start ends another way (refused: Destroy removed its folders) and
    never notices it lost its claim; what it made must still be undone."""
    from sandboxes import engine

    fake = DestroyDuringProvision(images={TEST_IMAGE})
    with engine.override(fake):
        box = services.sandbox_create(
            actor=ACTOR, team=team, name="leaky", image=TEST_IMAGE, memory_mb=256, cpus=1, network_mode="none", enqueue=False
        )
        services.sandbox_perform(sandbox_id=box.pk, action="start")
        services.sandbox_request_action(actor=ACTOR, sandbox=box, action="stop", enqueue=False)
        services.sandbox_perform(sandbox_id=box.pk, action="stop")
        box.refresh_from_db()
        services.sandbox_request_action(actor=ACTOR, sandbox=box, action="start", enqueue=False)
        fake.sandbox_pk = box.pk
        services.sandbox_perform(sandbox_id=box.pk, action="start")
    box.refresh_from_db()
    assert box.status == "destroyed"
    assert box.volume_name not in fake.volumes and not fake.containers
    assert not box.workspace_path.exists()


class WorkerDied(BaseException):
    """The worker's process ends here (SIGKILL): nothing after this point runs or is recorded."""


@pytest.mark.docker
@pytest.mark.django_db
def test_a_start_whose_worker_died_after_docker_started_it_still_delivers_the_secrets(make_sandbox, clean_docker, monkeypatch):
    """Issue 14: the run that picks a start up again finds the container running; the steps after
    Docker's start (mounts verified, secrets delivered, grants) must run all the same."""
    from sandboxes import secrets
    from sandboxes.engine import EngineClient
    from sandboxes.models import Secret

    sandbox = make_sandbox("resumed", network_mode="none")
    services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="stop", enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="stop")
    secrets.secret_set(actor=ACTOR, sandbox=sandbox, name="DEPLOY_TOKEN", value="tok-resumed", delivery=Secret.Delivery.FILE)
    services.sandbox_request_action(actor=ACTOR, sandbox=Sandbox.objects.get(pk=sandbox.pk), action="start", enqueue=False)

    real_start = EngineClient.start

    def start_then_die(self, container_id: str) -> None:
        real_start(self, container_id)  # Docker really starts it; the worker dies right after
        raise WorkerDied()

    monkeypatch.setattr(EngineClient, "start", start_then_die)
    with pytest.raises(WorkerDied):
        services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    monkeypatch.undo()
    sandbox.refresh_from_db()
    assert sandbox.pending_action == "start"
    assert docker_cli("inspect", "-f", "{{.State.Running}}", sandbox.container_id).stdout.strip() == "true"
    read = ["exec", sandbox.container_id, "cat", "/run/secrets/DEPLOY_TOKEN"]
    assert docker_cli(*read, check=False).returncode != 0  # the dead run never delivered it

    # Its heartbeat has stopped: the next delivery of the task takes the run and finishes it.
    Sandbox.objects.filter(pk=sandbox.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=settings.SANDBOX_STALE_SECONDS + 5))
    services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    sandbox.refresh_from_db()
    assert sandbox.status == "running" and not sandbox.pending_action, sandbox.status_detail
    assert sandbox.attempts == 2
    assert docker_cli(*read, check=False).stdout == "tok-resumed"
