"""State stays true when Docker changes behind the panel's back."""

import pytest

from audit.models import AuditEvent
from sandboxes import services
from sandboxes.models import Sandbox
from tests.support.docker import docker_cli
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def status_becomes(pk: int, status: str) -> Sandbox:
    return wait_for(lambda: (s := Sandbox.objects.get(pk=pk)).status == status and s, timeout=15, what=f"status {status}")


def test_container_removed_outside_the_panel_is_noticed(make_sandbox, engine_watcher, clean_docker):
    sandbox = make_sandbox("gone")
    docker_cli("rm", "-f", sandbox.container_id)
    sandbox = status_becomes(sandbox.pk, "stopped")
    assert sandbox.container_id == ""
    assert "removed outside the panel" in sandbox.status_detail
    # Data is kept and Start brings it back with a new container.
    services.sandbox_request_action(actor=services.SystemActor("t"), sandbox=sandbox, action="start", enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    assert Sandbox.objects.get(pk=sandbox.pk).status == "running"


def test_killed_container_becomes_error_with_reason(make_sandbox, engine_watcher, clean_docker):
    sandbox = make_sandbox("killed")
    docker_cli("kill", sandbox.container_id)
    sandbox = status_becomes(sandbox.pk, "error")
    assert "exited with code 137" in sandbox.status_detail
    # Docker's own events are in the audit trail, by the actor "docker".
    events = wait_for(
        lambda: (
            {e.action: e for e in AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid, actor_name="docker")}
            if AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid, action="container.die").exists()
            else None
        ),
        timeout=15,
        what="the die event in the audit trail",
    )
    assert events["container.kill"].details["signal"] == "9"
    assert events["container.die"].details["exitCode"] == "137"
    docker_cli("rm", "-f", sandbox.container_id)
    wait_for(lambda: AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid, action="container.destroy").exists(), timeout=15, what="destroy")


def test_periodic_resync_catches_what_happened_while_nothing_watched(make_sandbox, clean_docker):
    sandbox = make_sandbox("missed")
    docker_cli("rm", "-f", sandbox.container_id)
    assert Sandbox.objects.get(pk=sandbox.pk).status == "running"  # nothing watching yet
    assert services.reconcile_all() == 1
    assert Sandbox.objects.get(pk=sandbox.pk).status == "stopped"
    assert services.reconcile_all() == 0  # idempotent


def test_busy_sandbox_is_left_to_its_task(make_sandbox, clean_docker):
    sandbox = make_sandbox("busy")
    services.sandbox_request_action(actor=services.SystemActor("t"), sandbox=sandbox, action="stop", enqueue=False)
    docker_cli("rm", "-f", sandbox.container_id)
    assert services.reconcile_all() == 0
    services.sandbox_perform(sandbox_id=sandbox.pk, action="stop")
    services.sandbox_perform(sandbox_id=sandbox.pk, action="stop")  # a redelivered task is a no-op
    assert Sandbox.objects.get(pk=sandbox.pk).status == "stopped"


def test_leftover_container_with_the_same_name_is_replaced(make_sandbox, clean_docker):
    """A worker that died between create and saving the id leaves a nameless-to-us container."""
    sandbox = make_sandbox("leftover")
    Sandbox.objects.filter(pk=sandbox.pk).update(container_id="", status="stopped")
    sandbox.refresh_from_db()
    services.sandbox_request_action(actor=services.SystemActor("t"), sandbox=sandbox, action="start", enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    sandbox.refresh_from_db()
    assert sandbox.status == "running" and sandbox.container_id
    names = docker_cli("ps", "-a", "--filter", f"name={sandbox.container_name}", "--format", "{{.ID}}").stdout.split()
    assert len(names) == 1 and sandbox.container_id.startswith(names[0])


def test_lost_task_is_queued_again_by_the_periodic_resync(make_sandbox, celery_worker, clean_docker):
    """A claim whose task vanished (Redis restarted without persistence) does not stay stuck."""
    from datetime import timedelta

    from django.utils import timezone

    from sandboxes.tasks import reconcile_all_task

    sandbox = make_sandbox("lost")
    services.sandbox_request_action(actor=services.SystemActor("t"), sandbox=sandbox, action="stop", enqueue=False)
    assert services.requeue_stale_actions() == 0 and Sandbox.objects.get(pk=sandbox.pk).pending_action == "stop"  # not stale yet
    Sandbox.objects.filter(pk=sandbox.pk).update(claimed_at=timezone.now() - timedelta(hours=1))
    reconcile_all_task.apply()  # the periodic task, run here as beat would have it run
    sandbox = wait_for(
        lambda: (s := Sandbox.objects.get(pk=sandbox.pk)).status == "stopped" and not s.pending_action and s,
        timeout=30,
        what="the re-queued stop",
    )
    assert docker_cli("inspect", "-f", "{{.State.Running}}", sandbox.container_id).stdout.strip() == "false"
