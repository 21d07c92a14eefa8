"""The incident wizard's steps against the real engine, run in-process: each step does what it
says, evidence verifies and outlives Clean and Destroy, and the sandbox is held until Close."""

import hashlib
import tarfile
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction

from agents import otlp
from agents import services as agents
from audit.models import AuditEvent
from backups import archive
from backups.models import Backup
from incidents import services
from incidents.models import Incident
from sandboxes import engine
from sandboxes import services as sandbox_services
from sandboxes.models import Sandbox
from sandboxes.services.claims import claim
from tests.support.docker import docker_cli
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker
ACTOR = sandbox_services.SystemActor("test")
S = Incident.Step
AGENT_SAMPLE = (Path(__file__).parent.parent / "agents" / "claude_logs.json").read_bytes()


def run_step(incident: Incident, step: str, **kwargs) -> Incident:
    services.incident_advance(actor=ACTOR, incident=incident, step=step, enqueue=False, **kwargs)
    services.incident_step_perform(incident_id=incident.pk)
    incident.refresh_from_db()
    assert incident.state == Incident.State.DONE, incident.step_detail
    return incident


def test_the_whole_flow_freezes_snapshots_stops_resets_and_closes(make_sandbox, clean_docker, clean_workspace):
    sandbox = make_sandbox("suspect")
    (sandbox.workspace_path / "Projects" / "exfil.py").write_text("import os\n")
    engine.engine_for().exec_run(sandbox.container_id, ["sh", "-c", "echo the agent was here; touch /tmp/dropped"])
    agents.record_events([(sandbox.pk, otlp.event_rows(AGENT_SAMPLE, record_prompts=False))])

    incident = services.incident_declare(actor=ACTOR, sandbox=sandbox, severity="high", summary="it read ~/.ssh")
    sandbox.refresh_from_db()
    assert sandbox.on_hold and sandbox.pending_action == "incident"
    # Nothing else may act on a held sandbox.
    with pytest.raises(sandbox_services.SandboxError, match="held by an open incident"):
        sandbox_services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="unpause", enqueue=False)
    services.incident_step_perform(incident_id=incident.pk)
    # The declare also queued the step: a worker of the session may be the one that runs it.
    wait_for(lambda: Incident.objects.get(pk=incident.pk).state != Incident.State.RUNNING, timeout=30, what="the pause step")
    incident.refresh_from_db()
    assert incident.state == Incident.State.DONE
    assert docker_cli("inspect", "-f", "{{.State.Status}}", sandbox.container_id).stdout.strip() == "paused"
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.PAUSED and sandbox.pending_action == ""
    with pytest.raises(sandbox_services.SandboxError):
        sandbox_services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="unpause", enqueue=False)

    incident = run_step(incident, S.SNAPSHOT)
    image = docker_cli("image", "inspect", "-f", "{{json .Config.Labels}}", incident.image_id).stdout
    assert str(incident.uuid) in image and str(sandbox.uuid) in image
    assert incident.backup.status == Backup.Status.DONE and incident.backup.kind == Backup.Kind.EVIDENCE
    evidence = settings.EVIDENCE_ROOT / incident.evidence_file
    assert hashlib.sha256(evidence.read_bytes()).hexdigest() == incident.evidence_sha256
    checked = archive.verify(str(evidence))
    assert checked.ok, checked.problems
    with tarfile.open(evidence, "r:gz") as tar:
        members = set(tar.getnames())
    names = ("logs.txt", "inspect.json", "diff.json", "processes.json", "stats.json", "files-modified-last-day.json", "incident.json")
    for name in (*names, "agent-activity.jsonl"):
        assert f"evidence/{name}" in members
    assert f"evidence/backup/{incident.backup.file_name}" in members
    with tarfile.open(evidence, "r:gz") as tar:
        told = tar.extractfile("evidence/agent-activity.jsonl").read().decode()  # type: ignore[union-attr]
    assert len(told.splitlines()) == 20 and "echo hello-from-bash > /workspace/Projects/out.txt" in told
    # The evidence image never runs again, whoever asks and under whatever name.
    with pytest.raises(sandbox_services.InvalidInput, match="evidence"):
        sandbox_services.sandbox_create(
            actor=ACTOR,
            team=sandbox.team,
            name="reborn",
            image=incident.image_ref,
            memory_mb=256,
            cpus=1,
            network_mode="none",
            enqueue=False,
        )
    docker_cli("tag", incident.image_id, "innocent/name:1")
    reborn = sandbox_services.sandbox_create(
        actor=ACTOR, team=sandbox.team, name="reborn", image="innocent/name:1", memory_mb=256, cpus=1, network_mode="none", enqueue=False
    )
    sandbox_services.sandbox_perform(sandbox_id=reborn.pk, action="start")
    reborn.refresh_from_db()
    assert reborn.status == Sandbox.Status.ERROR and "kept as evidence" in reborn.status_detail and not reborn.container_id
    docker_cli("rmi", "innocent/name:1")
    audited = AuditEvent.objects.get(action="incident.evidence", sandbox_uuid=sandbox.uuid)
    assert audited.details["sha256"] == incident.evidence_sha256
    # The same step run again (a task redelivered after its worker died) makes nothing twice.
    with transaction.atomic():
        claim(sandbox=sandbox, action="incident", allowed_from=[Sandbox.Status.PAUSED], while_on_hold=True)
        Incident.objects.filter(pk=incident.pk).update(state=Incident.State.RUNNING)
    services.incident_step_perform(incident_id=incident.pk)
    again = Incident.objects.get(pk=incident.pk)
    assert again.state == Incident.State.DONE and again.evidence_sha256 == incident.evidence_sha256 and again.image_id == incident.image_id
    assert Backup.objects.filter(kind=Backup.Kind.EVIDENCE, sandbox=sandbox).count() == 1

    incident = run_step(incident, S.STOP)
    assert docker_cli("inspect", "-f", "{{.State.Status}}", sandbox.container_id).stdout.strip() == "exited"
    incident = run_step(incident, S.RESET, reset_mode=Incident.ResetMode.CLEAN)
    sandbox.refresh_from_db()
    assert sandbox.container_id == "" and sandbox.status == Sandbox.Status.STOPPED
    assert (sandbox.workspace_path / "Projects" / "exfil.py").exists()  # the data is kept

    services.incident_close(actor=ACTOR, incident=incident, notes="rotated the key", resolution="contained")
    sandbox.refresh_from_db()
    assert not sandbox.on_hold
    assert [e.step for e in incident.events.all()][0] == S.DECLARE

    # Evidence outlives Clean and Destroy.
    sandbox_services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="clean", enqueue=False)
    sandbox_services.sandbox_perform(sandbox_id=sandbox.pk, action="clean")
    sandbox_services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="destroy", enqueue=False)
    sandbox_services.sandbox_perform(sandbox_id=sandbox.pk, action="destroy")
    assert Sandbox.objects.get(pk=sandbox.pk).status == Sandbox.Status.DESTROYED
    assert docker_cli("image", "inspect", incident.image_id, check=False).returncode == 0
    assert evidence.exists() and incident.backup.path.exists()
    docker_cli("rmi", "-f", incident.image_id, check=False)


def test_reset_can_restore_an_earlier_backup(make_sandbox, clean_docker, clean_workspace):
    from backups import services as backup_services

    sandbox = make_sandbox("rewind")
    (sandbox.workspace_path / "Projects" / "good.txt").write_text("good")
    good = backup_services.backup_request(actor=ACTOR, sandbox=sandbox, enqueue=False)
    backup_services.backup_perform(backup_id=good.pk)
    good.refresh_from_db()
    (sandbox.workspace_path / "Projects" / "bad.txt").write_text("planted")

    incident = services.incident_declare(actor=ACTOR, sandbox=sandbox, severity="critical", summary="planted a file")
    services.incident_step_perform(incident_id=incident.pk)
    incident.refresh_from_db()
    for step in (S.SNAPSHOT, S.STOP):
        incident = run_step(incident, step)
    incident = run_step(incident, S.RESET, reset_mode=Incident.ResetMode.RESTORE, reset_backup=good)
    assert (sandbox.workspace_path / "Projects" / "good.txt").read_text() == "good"
    assert not (sandbox.workspace_path / "Projects" / "bad.txt").exists()
    # ...and the evidence kept what was there.
    with tarfile.open(incident.backup.path, "r:gz") as tar:
        assert "workspace/Projects/bad.txt" in tar.getnames()
    docker_cli("rmi", "-f", incident.image_id, check=False)


def test_a_team_freeze_pauses_every_sandbox_then_snapshots_them(make_sandbox, team, clean_docker, clean_workspace):
    first, second = make_sandbox("team-a"), make_sandbox("team-b")
    incidents, skipped = services.freeze_team(actor=ACTOR, team=team, severity="critical", summary="token leaked")
    assert skipped == [] and len(incidents) == 2
    for incident in incidents:
        services.incident_step_perform(incident_id=incident.pk)
    for sandbox in (first, second):
        assert docker_cli("inspect", "-f", "{{.State.Status}}", Sandbox.objects.get(pk=sandbox.pk).container_id).stdout.strip() == "paused"
    assert services.snapshot_group(str(incidents[0].group)) == 2
    for incident in Incident.objects.filter(group=incidents[0].group):
        assert incident.step == S.SNAPSHOT and incident.state == Incident.State.DONE and incident.evidence_sha256
        docker_cli("rmi", "-f", incident.image_id, check=False)


def test_a_team_freeze_past_its_soft_time_limit_queues_the_rest_instead_of_running_them_to_the_kill(
    make_sandbox, team, clean_docker, clean_workspace, own_queue, monkeypatch
):
    """The soft time limit of the task that snapshots a freeze's sandboxes one after another
    fires during one evidence archive (which has no cap of its own): that one ends saying so, and
    the next ones are queued as jobs of their own. Run on in the same task, the next one was
    killed half-way by the hard limit a minute later."""
    from celery.exceptions import SoftTimeLimitExceeded

    make_sandbox("late-a"), make_sandbox("late-b")
    incidents, _ = services.freeze_team(actor=ACTOR, team=team, severity="critical", summary="token leaked")
    for incident in incidents:
        services.incident_step_perform(incident_id=incident.pk)
    real = services.STEPS[S.SNAPSHOT]

    def first_runs_out_of_time(incident, sandbox):
        if sandbox.name == "late-a":
            raise SoftTimeLimitExceeded()  # what Celery raises in the task when its soft limit passes
        return real(incident, sandbox)

    monkeypatch.setitem(services.STEPS, S.SNAPSHOT, first_runs_out_of_time)
    assert services.snapshot_group(str(incidents[0].group)) == 1
    late_a, late_b = Incident.objects.filter(group=incidents[0].group).order_by("sandbox_name")
    assert late_a.state == Incident.State.FAILED and "time limit" in late_a.step_detail
    # The second was not run here: it waits for a job worker, its step started and claimed.
    assert late_b.step == S.SNAPSHOT and late_b.state == Incident.State.RUNNING and not late_b.evidence_file
    assert Sandbox.objects.get(pk=late_b.sandbox_id).pending_action == Sandbox.Job.INCIDENT
    services.incident_step_perform(incident_id=late_b.pk)  # the job that was queued for it
    late_b.refresh_from_db()
    assert late_b.state == Incident.State.DONE and late_b.evidence_sha256, late_b.step_detail
    docker_cli("rmi", "-f", late_b.image_id, check=False)
