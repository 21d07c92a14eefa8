"""The incident wizard: declare, snapshot, stop, reset, close, one step at a time.

Each step claims the sandbox like any action (the claim `incident`) and runs in a task; the
sandbox is held (on_hold) from Declare to Close, so no other action changes it meanwhile. Every
step can run again: each part records what it made on the incident (the image, the backup, the
evidence archive) and a second run reuses it, so a worker that dies part-way is resumed where it
stopped (claims.requeue_stale_actions calls resume_incident).
"""

import json
import logging
import os
import time
import uuid as uuidlib
from collections.abc import Callable

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backups import archive
from backups.models import Backup, Restore
from backups.services import BackupError, write_backup
from backups.services.backup import fail_backup_row, new_backup_row
from backups.services.restore import restore_into, staging_dir
from controlpanel.queue import enqueue_on_commit
from sandboxes import activity, engine, fdwalk, live, policy, workspace
from sandboxes.models import Sandbox
from sandboxes.services import LostClaim, SandboxError, SystemActor, finish, sandbox_sync
from sandboxes.services.actions import run_reset
from sandboxes.services.auditing import audit
from sandboxes.services.claims import claim, heartbeat, take_run
from teams.models import Team
from teams.permissions import Role, actor_name, actor_user, authorize

from .models import Incident, IncidentEvent

log = logging.getLogger(__name__)
S = Sandbox.Status
JOB = Sandbox.Job.INCIDENT
STEP = Incident.Step
STATE = Incident.State
LIVE = frozenset({S.RUNNING, S.PAUSED, S.STOPPED, S.ERROR})
# The step that may follow each step once it is done.
NEXT: dict[str, str] = {STEP.DECLARE: STEP.SNAPSHOT, STEP.SNAPSHOT: STEP.STOP, STEP.STOP: STEP.RESET, STEP.RESET: STEP.CLOSE}


class IncidentError(SandboxError):
    """A step that cannot be taken now; the message says why."""


def _event(incident: Incident, message: str, *, actor: str = "system", failed: bool = False, step: str | None = None) -> None:
    IncidentEvent.objects.create(incident=incident, step=step or incident.step, message=message, actor_name=actor, failed=failed)


def audit_incident(actor, incident: Incident, action: str, details: dict | None = None, source_ip: str | None = None) -> None:
    audit(actor, action, incident.sandbox, {"incident": incident.pk, **(details or {})}, source_ip)


# --- the requests (web, CLI) ----------------------------------------------------------------------


def incident_declare(
    *, actor, sandbox: Sandbox, severity: str, summary: str, source_ip: str | None = None, group: uuidlib.UUID | None = None
) -> Incident:
    """Open an incident: hold the sandbox and pause it at once (a task, queued on commit)."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    if severity not in Incident.Severity.values:
        raise IncidentError(f"Severity: one of {', '.join(Incident.Severity.values)}.")
    summary = (summary or "").strip()
    if not summary:
        raise IncidentError("Say what was seen.")
    with transaction.atomic():
        if not Sandbox.objects.filter(pk=sandbox.pk, on_hold=False).exclude(status__in=[S.DESTROYED, S.DESTROYING]).update(on_hold=True):
            raise IncidentError(f"{sandbox.name} already has an open incident, or is destroyed.")
        incident = Incident.objects.create(
            sandbox=sandbox,
            team_id=sandbox.team_id,
            sandbox_name=sandbox.name,
            group=group,
            severity=severity,
            summary=summary[:5000],
            declared_by=actor_user(actor),
            declared_by_name=actor_name(actor),
        )
        _event(incident, f"Declared ({severity}): {summary[:500]}", actor=actor_name(actor))
        audit_incident(actor, incident, "incident.declared", {"severity": severity, "summary": summary[:500]}, source_ip)
        try:
            claim(sandbox=sandbox, action=JOB, allowed_from=LIVE, while_on_hold=True)
        except SandboxError as exc:
            Incident.objects.filter(pk=incident.pk).update(state=STATE.FAILED, step_detail=str(exc))
            _event(incident, f"Could not pause it yet: {exc} Retry the step when that has ended.", failed=True)
        else:
            _queue(incident)
        live.sandbox_changed(sandbox)
    incident.refresh_from_db()
    return incident


def incident_advance(
    *,
    actor,
    incident: Incident,
    step: str,
    reset_mode: str = "",
    reset_backup: Backup | None = None,
    drop_outside_links: bool = False,
    source_ip: str | None = None,
    enqueue: bool = True,
) -> Incident:
    """Start the next step (or run a failed step again); its task is queued unless the caller
    runs it itself (`enqueue` False)."""
    authorize(actor, incident.team, Role.OPERATOR)
    if step == STEP.CLOSE or step not in STEP.values:
        raise IncidentError("Close the incident with its notes and resolution.")
    retry = incident.step == step and incident.state == STATE.FAILED
    if not retry and not (incident.state == STATE.DONE and NEXT.get(incident.step) == step):
        raise IncidentError(f"{step.capitalize()} is not the next step (the incident is at {incident.step}, {incident.state}).")
    changes: dict = {"step": step, "state": STATE.RUNNING, "step_detail": ""}
    if step == STEP.RESET:
        if reset_mode not in Incident.ResetMode.values:
            raise IncidentError("Choose how to reset: clean from the image, or restore a backup.")
        if reset_mode == Incident.ResetMode.RESTORE:
            if reset_backup is None or reset_backup.sandbox_id != incident.sandbox_id or reset_backup.status != Backup.Status.DONE:
                raise IncidentError("Choose a finished backup of this sandbox to restore.")
        changes.update(
            reset_mode=reset_mode,
            reset_backup=reset_backup if reset_mode == Incident.ResetMode.RESTORE else None,
            reset_drop_outside_links=drop_outside_links,
        )
    with transaction.atomic():
        claim(sandbox=incident.sandbox, action=JOB, allowed_from=LIVE, while_on_hold=True)
        if not Incident.objects.filter(pk=incident.pk, step=incident.step, state=incident.state).update(**changes):
            raise IncidentError("The incident changed meanwhile; reload the page.")
        incident.refresh_from_db()
        what = f"{'Retrying' if retry else 'Started'} {step}" + (
            f" ({incident.get_reset_mode_display().lower()})" if step == STEP.RESET else ""
        )
        _event(incident, what, actor=actor_name(actor))
        audit_incident(actor, incident, f"incident.{step}", {"retry": retry, "reset_mode": reset_mode or None}, source_ip)
        if enqueue:
            _queue(incident)
        live.sandbox_changed(incident.sandbox)
    return incident


def incident_close(*, actor, incident: Incident, notes: str, resolution: str, source_ip: str | None = None) -> Incident:
    """Close the incident (after any step that has ended) and release the sandbox."""
    authorize(actor, incident.team, Role.OPERATOR)
    resolution = (resolution or "").strip()
    if not resolution:
        raise IncidentError("Give a resolution.")
    with transaction.atomic():
        closed = (
            Incident.objects.filter(pk=incident.pk, state__in=[STATE.DONE, STATE.FAILED])
            .exclude(step=STEP.CLOSE)
            .update(
                step=STEP.CLOSE,
                state=STATE.DONE,
                notes=notes[:20000],
                resolution=resolution[:200],
                closed_at=timezone.now(),
                closed_by_name=actor_name(actor),
            )
        )
        if not closed:
            raise IncidentError("A step is still running, or the incident is closed already.")
        Sandbox.objects.filter(pk=incident.sandbox_id).update(on_hold=False)
        incident.refresh_from_db()
        _event(incident, f"Closed: {resolution}", actor=actor_name(actor))
        audit_incident(actor, incident, "incident.closed", {"resolution": resolution}, source_ip)
        live.sandbox_changed(incident.sandbox)
    return incident


def freeze_team(*, actor, team: Team, severity: str, summary: str, source_ip: str | None = None) -> tuple[list[Incident], list[str]]:
    """A team admin's "stop every sandbox of this team": an incident on each sandbox, each
    paused at once (its own task), then, for each host they are on, one task on that host's queue
    that snapshots its share of them one after another."""
    authorize(actor, team, Role.ADMIN)
    if not (summary or "").strip():
        raise IncidentError("Say what was seen.")
    group = uuidlib.uuid4()
    incidents, skipped = [], []
    for sandbox in Sandbox.objects.filter(team=team, status__in=list(LIVE)).order_by("name"):
        try:
            incidents.append(
                incident_declare(actor=actor, sandbox=sandbox, severity=severity, summary=summary, source_ip=source_ip, group=group)
            )
        except IncidentError as exc:
            skipped.append(f"{sandbox.name}: {exc}")
    if incidents:
        from .tasks import incident_group_snapshot_task

        hosts = sorted(set(Sandbox.objects.filter(pk__in=[i.sandbox_id for i in incidents]).values_list("host__name", flat=True)))
        transaction.on_commit(lambda: [incident_group_snapshot_task.delay(str(group), name) for name in hosts])
    return incidents, skipped


# The steps as long as a backup: their task is a job (incidents.tasks.incident_job_task).
JOB_STEPS = frozenset({STEP.SNAPSHOT, STEP.RESET})


def _step_task(step: str):
    from .tasks import incident_job_task, incident_step_task

    return incident_job_task if step in JOB_STEPS else incident_step_task


def _queue(incident: Incident) -> None:
    incident_id = incident.pk

    def refused():
        found = Incident.objects.filter(pk=incident_id).select_related("sandbox").first()
        if found is not None:
            _step_end(found, found.sandbox, ok=False, detail="The step was not started: the task queue (Redis) is not reachable.")

    enqueue_on_commit(_step_task(incident.step), incident_id, what=f"incident {incident_id}", on_refused=refused)


def resume_incident(sandbox: Sandbox) -> None:
    incident = Incident.objects.filter(sandbox=sandbox, state=STATE.RUNNING).exclude(step=STEP.CLOSE).first()
    if incident is None:
        finish(sandbox, JOB, None, "", outcome="done", audited=False)
        return
    _step_task(incident.step).delay(incident.pk)


# How alive a container is, and how alive a row says its sandbox is: a hold allows no more.
_ALIVE: dict[str, int] = {"running": 2, "restarting": 2, "paused": 1}
_RECORDED_ALIVE: dict[str, int] = {S.RUNNING.value: 2, S.PAUSED.value: 1}


def _more_alive(sandbox: Sandbox, state: engine.ContainerState | None) -> bool:
    return state is not None and _ALIVE.get(state.status, 0) > _RECORDED_ALIVE.get(sandbox.status, 0)


def incident_keep_hold(*, sandbox: Sandbox, state: engine.ContainerState) -> bool:
    """A held sandbox's container was found more alive than its row says (`docker start` or
    `docker unpause` outside the panel): put it back at once, paused if the incident paused it
    and stopped otherwise, and say so in the timeline and the audit trail. Runs under the
    incident's claim, so no step and no second watcher acts meanwhile. False when there is
    nothing to keep (no open incident, or a container no more alive than its row)."""
    incident = Incident.objects.filter(sandbox=sandbox).exclude(step=STEP.CLOSE, state=STATE.DONE).first()
    if incident is None or not _more_alive(sandbox, state):
        return False
    try:
        with transaction.atomic():
            claim(sandbox=sandbox, action=JOB, allowed_from=LIVE, while_on_hold=True)
    except SandboxError:
        return True  # a step (or another watcher) holds it; it looks at the container itself
    sandbox = Sandbox.objects.get(pk=sandbox.pk)  # as it is now that the claim is ours
    detail = sandbox.status_detail
    try:
        detail = _put_back(incident, sandbox) or detail
    finally:
        finish(sandbox, JOB, None, detail, outcome="done", audited=False)
    return True


def _put_back(incident: Incident, sandbox: Sandbox) -> str | None:
    """Pause or stop the held sandbox's container if it is more alive than its row; the message
    said in the timeline and the audit trail, or None when there was nothing to do."""
    docker = engine.engine_for(sandbox)
    state = docker.container_state(sandbox.container_id) if sandbox.container_id else None
    if state is None or not _more_alive(sandbox, state):
        return None
    put_back = "paused" if sandbox.status == S.PAUSED else "stopped"
    seen = f"The container was found {state.status} outside the panel while incident #{incident.pk} held it"
    try:
        if put_back == "paused":
            docker.pause(state.id)
        else:
            docker.stop(state.id, timeout=0)  # killed: a hold gives it no time to act
        message, failed = f"{seen}; it was {put_back} again at once.", False
    except engine.EngineError as exc:
        message, failed = f"{seen}; it could not be {put_back} again: {exc}", True
    details = {"seen": state.status, "recorded": sandbox.status, "container": state.id[:12], "put_back": put_back, "failed": failed}
    with transaction.atomic():
        _event(incident, message, failed=failed)
        audit_incident(SystemActor("hold"), incident, "incident.hold_enforced", details)
    return message


# --- the steps (in a task) --------------------------------------------------------------------------


def incident_step_perform(*, incident_id: int) -> bool:
    """Run the incident's current step, if it is running and its claim is free to take. False
    when the task's soft time limit stopped it: the task is killed soon (see snapshot_group)."""
    incident = (
        Incident.objects.select_related("sandbox__team", "backup", "reset_backup").filter(pk=incident_id, state=STATE.RUNNING).first()
    )
    if incident is None or incident.step == STEP.CLOSE:
        return True
    sandbox = take_run(incident.sandbox_id, JOB)
    if sandbox is None:
        return True
    if sandbox.attempts > settings.SANDBOX_MAX_ATTEMPTS:
        _step_end(
            incident, sandbox, ok=False, detail=f"Given up after {settings.SANDBOX_MAX_ATTEMPTS} attempts: its worker stopped each time."
        )
        return True
    with heartbeat(sandbox.pk, JOB):
        try:
            status = STEPS[incident.step](incident, sandbox)
        except (LostClaim, SandboxError, archive.ArchiveError, engine.EngineError, workspace.WorkspaceError, OSError) as exc:
            _step_end(incident, sandbox, ok=False, detail=f"{incident.step} failed: {exc or type(exc).__name__}")
        except policy.PolicyViolation as exc:
            _step_end(incident, sandbox, ok=False, detail=f"{incident.step} was refused: {' '.join(exc.problems)}")
        except SoftTimeLimitExceeded:
            _step_end(incident, sandbox, ok=False, detail=f"{incident.step} took longer than its task's time limit and was stopped.")
            return False
        except Exception as exc:  # a step always ends; the log has the traceback
            log.exception("incident %s step %s failed unexpectedly", incident.pk, incident.step)
            _step_end(incident, sandbox, ok=False, detail=f"{incident.step} failed unexpectedly ({type(exc).__name__}: {exc}).")
        else:
            _step_end(incident, sandbox, ok=True, detail="", status=status)
    return True


def _step_end(incident: Incident, sandbox: Sandbox, *, ok: bool, detail: str, status: str | None = None) -> None:
    with transaction.atomic():
        Incident.objects.filter(pk=incident.pk, state=STATE.RUNNING).update(state=STATE.DONE if ok else STATE.FAILED, step_detail=detail)
        _event(incident, f"{incident.step.capitalize()} done." if ok else detail, failed=not ok)
        audit_incident(
            SystemActor("system"),
            incident,
            f"incident.{incident.step}.{'done' if ok else 'failed'}",
            {"detail": detail} if detail else None,
        )
        finish(sandbox, JOB, status, "" if ok else detail, outcome="done" if ok else "failed", audited=False)
    _look_after_step(sandbox)


def _look_after_step(sandbox: Sandbox) -> None:
    """The watcher leaves a claimed sandbox alone: what was done to its container outside the
    panel while the step ran (a `docker unpause`) is put back now, not at the next resync."""
    try:
        sandbox_sync(sandbox=Sandbox.objects.select_related("team").get(pk=sandbox.pk))
    except engine.EngineError as exc:
        log.warning("could not look at %s's container after the step: %s", sandbox.name, exc)


def _declare(incident: Incident, sandbox: Sandbox) -> str | None:
    docker = engine.engine_for(sandbox)
    state = docker.container_state(sandbox.container_id) if sandbox.container_id else None
    if state is not None and state.status == "running":
        docker.pause(state.id)
        _event(incident, "Paused the sandbox: its processes are frozen as they were.")
        return S.PAUSED
    _event(incident, f"Nothing to pause: the container is {state.status if state else 'gone'}.")
    return None


def _snapshot(incident: Incident, sandbox: Sandbox) -> str | None:
    docker = engine.engine_for(sandbox)
    state = docker.container_state(sandbox.container_id) if sandbox.container_id else None
    if not incident.image_id and state is not None:
        ref = f"{engine.EVIDENCE_REPOSITORY}{sandbox.name}"
        tag = f"incident-{incident.pk}"
        given = docker.given_environment(docker.inspect_container(state.id))
        image_id = docker.commit_evidence(state.id, repository=ref, tag=tag, incident=str(incident.uuid), clear_env=given)
        Incident.objects.filter(pk=incident.pk).update(image_id=image_id, image_ref=f"{ref}:{tag}")
        incident.image_id, incident.image_ref = image_id, f"{ref}:{tag}"
        _event(incident, f"Committed the container to the image {ref}:{tag} ({image_id[:19]}), kept as evidence.")
    backup = incident.backup
    if backup is None:
        backup = new_backup_row(SystemActor(f"incident #{incident.pk}"), sandbox, Backup.Kind.EVIDENCE)
        Incident.objects.filter(pk=incident.pk).update(backup=backup)
        incident.backup = backup
    if backup.status != Backup.Status.DONE:
        try:
            write_backup(sandbox, backup, level=settings.INCIDENT_COMPRESSION_LEVEL)
        except Exception as exc:
            fail_backup_row(backup, f"The evidence backup failed: {exc}")
            Incident.objects.filter(pk=incident.pk).update(backup=None)  # a retry makes a new one
            raise
        _event(
            incident,
            f"Backed up the workspace and the home volume: {backup.file_name} ({backup.files} entries, sha256 {backup.sha256[:16]}…).",
        )
    if not (incident.evidence_file and incident.evidence_path and incident.evidence_path.exists()):
        _bundle(incident, sandbox, state, backup)
    return None


def _without_values(docker, data: dict) -> dict:
    """`docker inspect` with the values of the variables the panel gave (secrets among them)
    replaced: evidence is read by people who must not learn them."""
    given = set(docker.given_environment(data))
    config = data.get("Config") or {}
    config["Env"] = [f"{k}=<withheld>" if k in given else f"{k}={v}" for k, _, v in (e.partition("=") for e in config.get("Env") or [])]
    return data


def _bundle(incident: Incident, sandbox: Sandbox, state: engine.ContainerState | None, backup: Backup) -> None:
    """Save what the engine and the host say of the sandbox now, and bundle it with the backup
    into one evidence archive whose manifest holds the sha256 of every member."""
    docker = engine.engine_for(sandbox)
    root = settings.EVIDENCE_ROOT
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    name = f"incident-{incident.pk}-{sandbox.name}-{stamp}.tar.gz"
    saved: dict[str, bytes] = {}
    missing: list[str] = []

    def save(member: str, what) -> None:
        try:
            saved[member] = what()
        except (engine.EngineError, OSError) as exc:
            missing.append(f"{member}: {exc}")

    if state is not None:
        cid = state.id
        save("logs.txt", lambda: _full_logs(docker, cid))
        save("inspect.json", lambda: _json(_without_values(docker, docker.inspect_container(cid))))
        save("diff.json", lambda: _json(docker.diff(cid)))
        save("processes.json", lambda: _json(docker.top(cid)) if _is_up(docker, cid) else b"[]")
        save("stats.json", lambda: _json(docker.stats_once(cid)))
    else:
        missing.append("logs, inspect, diff, processes, stats: the sandbox has no container")
    found = activity.recent_files(sandbox, within_seconds=86400, limit=10000)
    saved["files-modified-last-day.json"] = _json(
        [{"folder": e.folder, "path": e.path, "size": e.size, "modified": e.modified.isoformat(), "link": e.is_link} for e in found.entries]
    )
    from agents.selectors import evidence_lines

    saved["agent-activity.jsonl"] = evidence_lines(sandbox)  # what Claude Code in it did, as it told the receiver
    saved["incident.json"] = _json(
        {
            "id": incident.pk,
            "uuid": str(incident.uuid),
            "sandbox": sandbox.name,
            "sandbox_uuid": str(sandbox.uuid),
            "severity": incident.severity,
            "summary": incident.summary,
            "declared_by": incident.declared_by_name,
            "declared_at": incident.declared_at.isoformat(),
            "image": {"id": incident.image_id, "ref": incident.image_ref},
            "backup": {"file": backup.file_name, "sha256": backup.sha256},
            "missing": missing,
        }
    )
    now = time.time()
    with archive.ArchiveWriter(str(root / name), level=settings.INCIDENT_COMPRESSION_LEVEL) as writer:
        for member, data in saved.items():
            writer.add_bytes(f"evidence/{member}", data, mtime=now)
        fd = os.open(backup.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            writer.add_file_fd(f"evidence/backup/{backup.file_name}", fd, size=st.st_size, mode=0o600, mtime=st.st_mtime)
        finally:
            os.close(fd)
        manifest = {"incident": incident.pk, "incident_uuid": str(incident.uuid), "sandbox": sandbox.name, "missing": missing}
        size, sha256 = writer.commit(manifest, mtime=now)
        members = [{"path": e["path"], "size": e.get("size", 0), "sha256": e.get("sha256", "")} for e in writer.entries()]
    Incident.objects.filter(pk=incident.pk).update(evidence_file=name, evidence_sha256=sha256, evidence_size=size, evidence_members=members)
    incident.evidence_file, incident.evidence_sha256 = name, sha256
    audit_incident(SystemActor("system"), incident, "incident.evidence", {"file": name, "sha256": sha256, "size": size})
    _event(incident, f"Saved the evidence archive {name} (sha256 {sha256}).")


def _is_up(docker, container_id: str) -> bool:
    state = docker.container_state(container_id)
    return state is not None and state.status in ("running", "paused")


def _full_logs(docker, container_id: str) -> bytes:
    stream = docker.log_stream(container_id, tail="all", follow=False)
    try:
        return b"".join(engine.log_file_chunks(iter(stream)))
    finally:
        stream.close()


def _json(value) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True, default=str).encode()


def _stop(incident: Incident, sandbox: Sandbox) -> str:
    """A paused sandbox is killed at once (it never runs again before it stops); a running one
    gets its normal stop."""
    docker = engine.engine_for(sandbox)
    state = docker.container_state(sandbox.container_id) if sandbox.container_id else None
    if state is not None and state.status in ("running", "paused", "restarting"):
        docker.stop(state.id, timeout=0 if state.status == "paused" else settings.SANDBOX_STOP_TIMEOUT)
        _event(incident, "Stopped the sandbox" + (" (killed while frozen)." if state.status == "paused" else "."))
    else:
        _event(incident, "The sandbox was not running.")
    return S.STOPPED


def _reset(incident: Incident, sandbox: Sandbox) -> str:
    if incident.reset_mode == Incident.ResetMode.CLEAN:
        run_reset(sandbox, JOB)
        _event(
            incident, "Removed the container; the next start makes a clean one from the image. The folders and the home volume are kept."
        )
        return S.STOPPED
    backup = incident.reset_backup
    if backup is None:
        raise BackupError("The backup chosen for the reset is gone.")
    restore = Restore.objects.filter(sandbox=sandbox, backup=backup, status=Restore.Status.RUNNING).first() or Restore.objects.create(
        backup=backup,
        backup_name=backup.file_name,
        sandbox=sandbox,
        drop_outside_links=incident.reset_drop_outside_links,
        safety_backup=incident.backup,  # the evidence backup already holds what was there
        requested_by_name=f"incident #{incident.pk}",
    )
    try:
        dropped = restore_into(restore, sandbox, job=JOB)
    except archive.Refused as exc:
        Restore.objects.filter(pk=restore.pk).update(status=Restore.Status.REFUSED, detail=str(exc), finished_at=timezone.now())
        raise BackupError(f"the restore was refused: {exc}") from None
    except Exception as exc:
        Restore.objects.filter(pk=restore.pk).update(status=Restore.Status.FAILED, detail=str(exc), finished_at=timezone.now())
        raise
    finally:
        fdwalk.remove_path(str(staging_dir(restore, sandbox)))
    Restore.objects.filter(pk=restore.pk).update(status=Restore.Status.DONE, detail="restored by the incident", finished_at=timezone.now())
    note = f" ({len(dropped)} link(s) pointing outside their folder left out)" if dropped else ""
    _event(incident, f"Restored {backup.file_name}{note}; the container was removed and the next start makes a new one.")
    return S.STOPPED


STEPS: dict[str, Callable[[Incident, Sandbox], str | None]] = {
    STEP.DECLARE: _declare,
    STEP.SNAPSHOT: _snapshot,
    STEP.STOP: _stop,
    STEP.RESET: _reset,
}


def snapshot_group(group: str, *, host_name: str | None = None, wait: float = 60.0) -> int:
    """Snapshot a team-wide freeze's sandboxes one after another, each once its pause is done:
    those on `host_name` (the host whose queue this runs from), or all (a task from before hosts).
    Returns how many were snapshotted here. Once the task's soft time limit has stopped one (the
    evidence archive has no cap of its own), the rest are queued each as a job of its own, with
    its own time limits: run here, they would be killed half-way by the hard limit a minute later."""
    done = 0
    out_of_time = False
    incidents = Incident.objects.filter(group=group).order_by("sandbox_name")
    if host_name:
        incidents = incidents.filter(sandbox__host__name=host_name)
    for incident in incidents:
        deadline = time.monotonic() + (0 if out_of_time else wait)
        while incident.step == STEP.DECLARE and incident.state == STATE.RUNNING and time.monotonic() < deadline:
            time.sleep(0.2)
            incident.refresh_from_db()
        if not (incident.step == STEP.DECLARE and incident.state == STATE.DONE):
            continue
        try:
            incident_advance(actor=SystemActor("team freeze"), incident=incident, step=STEP.SNAPSHOT, enqueue=out_of_time)
        except SandboxError as exc:
            _event(incident, f"The snapshot could not start: {exc}", failed=True, step=STEP.SNAPSHOT)
            continue
        if out_of_time:
            continue
        out_of_time = not incident_step_perform(incident_id=incident.pk)
        done += 1
    return done
