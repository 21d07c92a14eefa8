"""An open incident holds its sandbox: what is done to its container outside the panel (a
`docker start`, a `docker unpause`) is undone at once, and lands in the incident's timeline and
the audit trail with what was seen."""

import pytest

from audit.models import AuditEvent
from incidents import services
from incidents.models import Incident
from sandboxes import services as sandbox_services
from sandboxes.models import Sandbox
from tests.support.docker import docker_cli
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
ACTOR = sandbox_services.SystemActor("test")


def container_status(sandbox: Sandbox) -> str:
    return docker_cli("inspect", "-f", "{{.State.Status}}", sandbox.container_id).stdout.strip()


def declared(sandbox: Sandbox) -> Incident:
    incident = services.incident_declare(actor=ACTOR, sandbox=sandbox, severity="high", summary="it read ~/.ssh")
    services.incident_step_perform(incident_id=incident.pk)
    # The declare also queued the step: a worker of the session may be the one that runs it.
    wait_for(lambda: Incident.objects.get(pk=incident.pk).state != Incident.State.RUNNING, timeout=30, what="the pause step")
    incident.refresh_from_db()
    assert incident.state == Incident.State.DONE, incident.step_detail
    return incident


def enforced(sandbox: Sandbox) -> AuditEvent:
    return wait_for(
        lambda: AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid, action="incident.hold_enforced").first(),
        timeout=15,
        what="the hold's enforcement in the audit trail",
    )


def test_a_held_sandbox_unpaused_by_hand_is_paused_again_at_once(make_sandbox, engine_watcher, clean_docker):
    sandbox = make_sandbox("held-paused")
    incident = declared(sandbox)
    assert container_status(sandbox) == "paused"

    docker_cli("unpause", sandbox.container_id)
    event = enforced(sandbox)
    assert container_status(sandbox) == "paused"
    assert event.details["seen"] == "running" and event.details["put_back"] == "paused"
    assert event.details["incident"] == incident.pk and event.details["container"] == sandbox.container_id[:12]
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.PAUSED and not sandbox.pending_action and sandbox.on_hold
    assert "outside the panel" in sandbox.status_detail
    assert incident.events.filter(message__contains="running outside the panel").exists()
    assert not AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid, action="sandbox.state_changed").exists()


def test_a_held_sandbox_started_by_hand_is_stopped_again_at_once(make_sandbox, engine_watcher, clean_docker):
    sandbox = make_sandbox("held-stopped")
    sandbox_services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="stop", enqueue=False)
    sandbox_services.sandbox_perform(sandbox_id=sandbox.pk, action="stop")
    incident = declared(Sandbox.objects.get(pk=sandbox.pk))
    assert container_status(sandbox) == "exited"

    docker_cli("start", sandbox.container_id)
    event = enforced(sandbox)
    wait_for(lambda: container_status(sandbox) == "exited", timeout=15, what="the container to be stopped again")
    assert event.details["seen"] == "running" and event.details["put_back"] == "stopped"
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.STOPPED and not sandbox.pending_action and sandbox.on_hold
    assert incident.events.filter(message__contains="running outside the panel").exists()
    # The incident's steps go on as before: the next one may be asked for.
    services.incident_advance(actor=ACTOR, incident=incident, step=Incident.Step.SNAPSHOT, enqueue=False)


def test_a_held_sandbox_unpaused_while_a_step_runs_is_paused_again_when_the_step_ends(make_sandbox, clean_docker):
    """The watcher leaves a sandbox alone while a step holds its claim; the step's end looks."""
    sandbox = make_sandbox("held-step")
    incident = declared(sandbox)
    services.incident_advance(actor=ACTOR, incident=incident, step=Incident.Step.SNAPSHOT, enqueue=False)
    docker_cli("unpause", sandbox.container_id)  # while the snapshot is queued, before it runs
    services.incident_step_perform(incident_id=incident.pk)
    incident.refresh_from_db()
    assert incident.state == Incident.State.DONE, incident.step_detail
    assert container_status(sandbox) == "paused"
    assert enforced(sandbox).details["put_back"] == "paused"
    assert Sandbox.objects.get(pk=sandbox.pk).status == Sandbox.Status.PAUSED
    docker_cli("rmi", "-f", incident.image_id, check=False)
