"""Restoring a backup: into its own sandbox (after backing up what is there now) or into a new
sandbox made from the manifest's settings, which pass every rule of a create.

Nothing the archive holds is written anywhere but a staging folder until the whole archive has
been judged and matched against its manifest (archive.extract), its sha256 matches the one
recorded when it was made, and the manifest's settings pass the policy. Only then is the
container removed, the home volume replaced and the six folders' contents swapped, each folder
keeping the identity the start check expects. A worker that dies part-way leaves the claim to be
resumed: the run starts again from the archive, which is still whole.
"""

import logging
import os
import shutil
import uuid as uuidlib
from decimal import Decimal
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlpanel.queue import enqueue_on_commit
from sandboxes import engine, fdwalk, live, policy, workspace
from sandboxes.models import Mount, Sandbox
from sandboxes.services import InvalidInput, LostClaim, SandboxError, SystemActor, finish, sandbox_create
from sandboxes.services.actions import provision, run_destroy, run_reset, run_stop
from sandboxes.services.auditing import audit
from sandboxes.services.claims import claim, claimed, heartbeat, take_run
from sandboxes.services.create import validate_settings
from sandboxes.services.hosting import host_problem
from sandboxes.services.rules import policy_rules
from sandboxes.services.specs import helper_spec, home_target, labels, sandbox_spec
from storage import pool
from storage import services as storage
from teams.models import Team
from teams.permissions import Role, actor_name, actor_user, authorize

from .. import archive
from ..models import Backup, Restore
from .backup import BackupError, audit_backup, fail_backup_row, new_backup_row, resume_job, write_backup

log = logging.getLogger(__name__)
S = Sandbox.Status
AREAS = tuple(f"{archive.WORKSPACE}/{f}" for f in workspace.FOLDERS) + (archive.HOME,)  # what a restore writes
JOB = Sandbox.Job.RESTORE
RESTORE_FROM = frozenset({S.RUNNING, S.STOPPED, S.PAUSED, S.ERROR})


def _usable(backup: Backup) -> None:
    if backup.status != Backup.Status.DONE:
        raise BackupError(f"{backup.file_name} is not a finished backup ({backup.status}).")
    if not backup.path.exists():
        raise BackupError(f"{backup.file_name} is missing from the panel's backup folder (BACKUP_ROOT).")


def judge_config(config: dict, *, sandbox: Sandbox | None = None) -> list[str]:
    """What the policy says of a manifest's settings: the same rules as a create's, judged
    without the disk (a restore into a new sandbox judges its folders again at create)."""
    if not isinstance(config, dict):
        return ["The manifest has no settings of a sandbox."]
    mounts = config.get("mounts", [])
    if not isinstance(mounts, list) or not all(
        isinstance(m, dict)
        and isinstance(m.get("host_path"), str)
        and isinstance(m.get("container_path"), str)
        and isinstance(m.get("read_only"), bool)
        for m in mounts
    ):
        return ["The manifest's mounts are not a list of host path, container path and read-only flag."]
    errors = validate_settings(
        name=config.get("name"),
        image=config.get("image"),
        memory_mb=config.get("memory_mb"),
        cpus=config.get("cpus"),
        network_mode=config.get("network_mode"),
        image_present=False,
    )
    problems = [m for msgs in errors.values() for m in msgs]
    if problems:
        return problems
    probe = Sandbox(
        name=config["name"],
        uuid=sandbox.uuid if sandbox else uuidlib.uuid4(),
        image=config["image"],
        memory_mb=config["memory_mb"],
        cpus=Decimal(str(config["cpus"])),
        pids_limit=settings.SANDBOX_PIDS_LIMIT,
        network_mode=config["network_mode"],
        read_only_rootfs=config.get("writable_root") is not True,
        low_ports_and_ping=config.get("low_ports_and_ping") is True,
    )
    extra = [Mount(host_path=m["host_path"], container_path=m["container_path"], read_only=m["read_only"]) for m in mounts]
    return policy.check_config(sandbox_spec(probe, extra), policy_rules())


def restore_request(
    *,
    actor,
    backup: Backup,
    sandbox: Sandbox | None = None,
    new_name: str | None = None,
    team: Team | None = None,
    drop_outside_links: bool = False,
    source_ip: str | None = None,
    enqueue: bool = True,
) -> Restore:
    """Claim the target and queue the restore: `sandbox` (the backup's own, backed up first) or
    a new sandbox called `new_name` in `team`, made from the manifest's settings by the same
    service as any create (InvalidInput or PolicyViolation if they are refused)."""
    _usable(backup)
    if sandbox is not None:
        authorize(actor, sandbox.team, Role.OPERATOR)
        if backup.sandbox_id != sandbox.pk:
            raise BackupError(
                f"{backup.file_name} is a backup of {backup.sandbox_name}, not of {sandbox.name}; restore it into a new sandbox."
            )
        if problem := host_problem(sandbox):
            raise SandboxError(problem)
        with transaction.atomic():
            claim(sandbox=sandbox, action=JOB, allowed_from=RESTORE_FROM)
            restore = _new_restore(actor, backup, sandbox, into_new=False, drop=drop_outside_links)
            audit(actor, "backup.restore_requested", sandbox, {"backup": backup.file_name, "into": "itself"}, source_ip)
            live.sandbox_changed(sandbox)
            if enqueue:
                _queue(restore.pk)
        return restore
    if team is None or not new_name:
        raise InvalidInput({"new_name": ["Name the new sandbox."]})
    # A copy of a backup is a copy of its data: operators of the backup's own team only (the
    # same rule as downloading it), and operators of the team it goes into.
    authorize(actor, backup.team, Role.OPERATOR)
    authorize(actor, team, Role.OPERATOR)
    problems = judge_config(backup.config)
    if problems:
        raise policy.PolicyViolation(["The backup's settings are refused: ", *problems])
    config = backup.config
    with transaction.atomic():
        new = sandbox_create(
            actor=actor,
            team=team,
            name=new_name,
            image=config["image"],
            memory_mb=config["memory_mb"],
            cpus=Decimal(str(config["cpus"])),
            network_mode=config["network_mode"],
            extra_mounts=[(m["host_path"], m["container_path"], m["read_only"]) for m in config.get("mounts", [])],
            writable_root=config.get("writable_root") is True,
            low_ports_and_ping=config.get("low_ports_and_ping") is True,
            runtime=config.get("runtime") if config.get("runtime") in Sandbox.Runtime.values else Sandbox.Runtime.RUNC,
            selinux_level=config.get("selinux_level") if isinstance(config.get("selinux_level"), str) else "",
            egress_presets=[p for p in config.get("egress_presets") or [] if isinstance(p, str)],
            egress_allow=config.get("egress_allow") if isinstance(config.get("egress_allow"), str) else "",
            source_ip=source_ip,
            enqueue=False,
            claim_for=JOB,
            audit_details={"restored_from": backup.file_name},
        )
        restore = _new_restore(actor, backup, new, into_new=True, drop=drop_outside_links)
        audit_backup(actor, backup, "backup.restore_requested", {"into": new.name, "into_team": team.slug}, source_ip)
        if enqueue:
            _queue(restore.pk)
    return restore


def _new_restore(actor, backup: Backup, sandbox: Sandbox, *, into_new: bool, drop: bool) -> Restore:
    return Restore.objects.create(
        backup=backup,
        backup_name=backup.file_name,
        sandbox=sandbox,
        into_new=into_new,
        drop_outside_links=drop,
        requested_by=actor_user(actor),
        requested_by_name=actor_name(actor),
    )


def _queue(restore_id: int) -> None:
    from ..tasks import restore_task

    def refused():
        restore = Restore.objects.filter(pk=restore_id).select_related("sandbox").first()
        if restore is not None:
            _end(restore, ok=False, detail="The restore was not started: the task queue (Redis) is not reachable.", refused=True)

    enqueue_on_commit(restore_task, restore_id, what=f"restore {restore_id}", on_refused=refused)


def resume_restore(sandbox: Sandbox) -> None:
    from ..tasks import restore_task

    resume_job(sandbox, Restore, JOB, restore_task)


def restore_perform(*, restore_id: int) -> None:
    restore = Restore.objects.select_related("backup", "sandbox__team").filter(pk=restore_id, status=Restore.Status.RUNNING).first()
    if restore is None:
        return
    sandbox = take_run(restore.sandbox_id, JOB)
    if sandbox is None:
        return
    if sandbox.attempts > settings.SANDBOX_MAX_ATTEMPTS:
        _end(restore, ok=False, detail=f"Given up after {settings.SANDBOX_MAX_ATTEMPTS} attempts: its worker stopped each time.")
        return
    with heartbeat(sandbox.pk, JOB):
        try:
            dropped = _restore(restore, sandbox)
        except archive.Refused as exc:
            _end(restore, ok=False, detail=f"Refused: {exc}", refused=True)
        except (
            LostClaim,
            SandboxError,
            archive.ArchiveError,
            engine.EngineError,
            workspace.WorkspaceError,
            policy.PolicyViolation,
            OSError,
        ) as exc:
            reason = " ".join(exc.problems) if isinstance(exc, policy.PolicyViolation) else str(exc) or type(exc).__name__
            _end(restore, ok=False, detail=f"The restore failed: {reason}")
        except SoftTimeLimitExceeded:
            _end(restore, ok=False, detail="The restore took longer than its task's time limit and was stopped.")
        except Exception as exc:  # a restore always ends; the log has the traceback
            log.exception("restore %s failed unexpectedly", restore.pk)
            _end(restore, ok=False, detail=f"The restore failed unexpectedly ({type(exc).__name__}: {exc}); see the worker's log.")
        else:
            note = f" Left out {len(dropped)} link(s) pointing outside their folder." if dropped else ""
            _end(restore, ok=True, detail=f"Restored from {restore.backup_name}.{note}")
        finally:
            fdwalk.remove_path(str(staging_dir(restore, sandbox)))


def staging_dir(restore: Restore, sandbox: Sandbox) -> Path:
    """Where the archive is unpacked. For a sandbox in the storage pool, inside its own
    subvolume (root's, never mounted): its folders are then filled by renames, which cannot
    cross subvolumes, and what is unpacked counts against its quota."""
    if sandbox.in_pool and pool.active():
        return sandbox.workspace_path / f".restore-{restore.pk}"
    return settings.WORKSPACE_ROOT / f".restore-{restore.pk}"


def restore_into(restore: Restore, sandbox: Sandbox, *, job: str = JOB) -> list[str]:
    """The restore itself, under the claim `job` (a restore's own, or an incident's reset);
    the caller removes staging_dir() afterwards, whatever the outcome."""
    return _restore(restore, sandbox, job=job)


def _restore(restore: Restore, sandbox: Sandbox, *, job: str = JOB) -> list[str]:
    backup = restore.backup
    if backup is None:
        raise BackupError("The backup was deleted.")
    _usable(backup)
    if restore.into_new and pool.active() and not sandbox.in_pool:
        provision(sandbox, job)  # its subvolume first: the archive is unpacked inside it
    staging = str(staging_dir(restore, sandbox))
    # Frozen from the safety backup on: nothing the agent writes after it can be lost. A
    # refused archive unfreezes it, as it was. The room for staging is given only while frozen.
    # What the archive unpacks to (its recorded data; an archive without that figure, ten times its
    # file), never more than the restore limit nor than the pool has free.
    room = min(
        backup.data_bytes or 10 * backup.size_bytes,
        settings.RESTORE_MAX_BYTES,
        shutil.disk_usage(settings.WORKSPACE_ROOT).free if pool.active() else settings.RESTORE_MAX_BYTES,
    )
    frozen = _freeze(sandbox) if not restore.into_new else False
    try:
        with storage.room_for(sandbox, room):
            if not restore.into_new:
                _safety_backup(restore, sandbox)
            result = _extract(restore, backup, sandbox, staging)
            restore.applying = True  # type: ignore[attr-defined]  # from here on, the sandbox changes
            _apply(sandbox, staging, job)
    except BaseException:
        if frozen and not getattr(restore, "applying", False):
            _thaw(sandbox)
        raise
    return result.dropped


def _freeze(sandbox: Sandbox) -> bool:
    docker = engine.engine_for(sandbox)
    state = docker.container_state(sandbox.container_id) if sandbox.container_id else None
    if state is not None and state.status == "running":
        docker.pause(state.id)
        return True
    return False


def _thaw(sandbox: Sandbox) -> None:
    try:
        engine.engine_for(sandbox).unpause(sandbox.container_id)
    except engine.EngineError:
        log.warning("could not unpause %s after its refused restore", sandbox.name, exc_info=True)


def _extract(restore: Restore, backup: Backup, sandbox: Sandbox, staging: str) -> archive.Checked:
    """The archive, judged and extracted into `staging`, matched against its manifest, its
    recorded sha256 and the policy: raises Refused, with nothing written outside staging."""
    fdwalk.remove_path(staging)  # left by a run whose worker died
    os.mkdir(staging, 0o700)
    limits = archive.Limits(
        members=settings.RESTORE_MAX_MEMBERS, bytes=settings.RESTORE_MAX_BYTES, min_free=settings.RESTORE_MIN_FREE_BYTES
    )
    owner = (settings.SANDBOX_UID, settings.SANDBOX_GID) if os.geteuid() == 0 else (None, None)
    result = archive.extract(
        str(backup.path), staging, areas=AREAS, limits=limits, uid=owner[0], gid=owner[1], drop_outside_links=restore.drop_outside_links
    )
    if backup.sha256 and result.sha256 != backup.sha256:
        raise archive.Refused("The archive's sha256 differs from the one recorded when it was made: it was changed or replaced.")
    problems = judge_config((result.manifest or {}).get("sandbox") or {}, sandbox=sandbox)
    if problems:
        raise archive.Refused("The manifest asks for settings the policy refuses: " + " ".join(problems))
    # The home goes into its volume as a plain tar stream, every hole written out as zeros:
    # what a sparse file there would take is its full size, and that is what the limit judges.
    home = result.sizes.get(archive.HOME, 0)
    if home > settings.RESTORE_MAX_BYTES:
        raise archive.Refused(
            f"The home's files add up to {home} bytes counting their holes (they are copied into the home volume whole), "
            f"more than the restore limit of {settings.RESTORE_MAX_BYTES} bytes."
        )
    free = shutil.disk_usage(staging).free
    if free < settings.RESTORE_MIN_FREE_BYTES:
        raise archive.ArchiveError(
            f"only {free} bytes are left on the disk of the workspace root; the restore stopped before changing anything."
        )
    return result


def _safety_backup(restore: Restore, sandbox: Sandbox) -> None:
    """Back up what the sandbox holds now, once (a resumed run reuses it)."""
    safety = restore.safety_backup
    if safety is not None and safety.status == Backup.Status.DONE:
        return
    if safety is None:
        safety = new_backup_row(SystemActor(f"before restore by {restore.requested_by_name}"), sandbox, Backup.Kind.PRE_RESTORE)
        Restore.objects.filter(pk=restore.pk).update(safety_backup=safety)
        restore.safety_backup = safety
    try:
        write_backup(sandbox, safety)
    except Exception as exc:
        fail_backup_row(safety, f"The backup before the restore failed: {exc}")
        raise
    audit(SystemActor("system"), "backup.done", sandbox, {"backup": safety.file_name, "sha256": safety.sha256, "kind": safety.kind})


def _apply(sandbox: Sandbox, staging: str, job: str) -> None:
    """Swap the sandbox's data for the staged one: no container, a new home volume filled
    through a helper, and each folder's contents replaced in place."""
    state = engine.engine_for(sandbox).container_state(sandbox.container_id) if sandbox.container_id else None
    if state is not None and state.status == "paused":
        if sandbox.in_pool:
            # Its quota was raised for the staging copy: it is never thawed while it has that
            # room. What it held is in the safety backup; its processes are killed frozen.
            engine.engine_for(sandbox).remove_container(state.id)
        else:
            engine.engine_for(sandbox).unpause(state.id)  # so that it stops as it would (frozen, it could only be killed)
    run_stop(sandbox, job)
    run_reset(sandbox, job)  # the container goes; a start makes a new one from the settings
    provision(sandbox, job)  # the folders (made for a new sandbox), volume and network
    docker = engine.engine_for(sandbox)
    home = os.path.join(staging, archive.HOME)
    if sandbox.in_pool:
        # The home volume is bound to home/ in the subvolume: its contents are swapped like a folder's.
        recorded = (sandbox.host_path_ids or {}).get(str(sandbox.home_path))
        workspace.replace_contents(
            sandbox.name,
            str(sandbox.uuid),
            workspace.HOME,
            home if os.path.isdir(home) else None,
            identity=tuple(recorded[-1]) if recorded else None,
        )
    elif not docker.remove_volume(sandbox.volume_name, labels=labels(sandbox)):
        raise engine.EngineError(f"The volume {sandbox.volume_name} is not this sandbox's; it is left alone.")
    _still_ours(sandbox, job)  # Destroy may take the sandbox over at any step: nothing is made after it did
    docker.ensure_volume(sandbox.volume_name, labels=labels(sandbox), device=str(sandbox.home_path) if sandbox.in_pool else "")
    if os.path.isdir(home) and not sandbox.in_pool:
        data = archive.tar_stream_of_folder(home, uid=settings.SANDBOX_UID, gid=settings.SANDBOX_GID)
        with docker.helper(helper_spec(sandbox), rules=policy_rules()) as helper_id:
            docker.write_archive(helper_id, home_target(), data)
    try:
        _still_ours(sandbox, job)
    except LostClaim:
        docker.remove_volume(sandbox.volume_name, labels=labels(sandbox))  # made while Destroy ran: it goes too
        raise
    sandbox.refresh_from_db()
    for folder in workspace.FOLDERS:
        _still_ours(sandbox, job)
        path = str(sandbox.workspace_path / folder)
        recorded = (sandbox.host_path_ids or {}).get(path)
        staged = os.path.join(staging, archive.WORKSPACE, folder)
        workspace.replace_contents(
            sandbox.name,
            str(sandbox.uuid),
            folder,
            staged if os.path.isdir(staged) else None,
            identity=tuple(recorded[-1]) if recorded else None,
        )


def _still_ours(sandbox: Sandbox, job: str) -> None:
    if not claimed(sandbox, job).exists():
        raise LostClaim()


def _end(restore: Restore, *, ok: bool, detail: str, refused: bool = False) -> None:
    """Record the outcome; release the sandbox (stopped, its container gone, after a restore).
    A new sandbox whose restore was refused or failed is removed again: no half-made sandbox."""
    sandbox = restore.sandbox
    status = Restore.Status.DONE if ok else (Restore.Status.REFUSED if refused else Restore.Status.FAILED)
    Restore.objects.filter(pk=restore.pk).update(status=status, detail=detail, finished_at=timezone.now())
    if ok:
        audit(SystemActor("system"), "backup.restored", sandbox, {"backup": restore.backup_name, "into_new": restore.into_new})
        finish(sandbox, JOB, S.STOPPED, detail, outcome="done", audited=False)
        return
    audit(SystemActor("system"), f"backup.restore_{status}", sandbox, {"backup": restore.backup_name, "detail": detail})
    if restore.into_new:
        try:
            run_destroy(sandbox, JOB)
        except (engine.EngineError, workspace.WorkspaceError, OSError, LostClaim):
            log.warning("could not remove the new sandbox %s after its restore ended", sandbox.name, exc_info=True)
            finish(sandbox, JOB, S.ERROR, f"{detail} Destroy this sandbox.", audited=False)
            return
        finish(sandbox, JOB, S.DESTROYED, detail, audited=False)
        return
    # In place: refused before anything changed, or failed part-way (the safety backup holds
    # what was there). Either way the sandbox says so and is stopped or left as it was.
    touched = getattr(restore, "applying", False)
    restore.refresh_from_db()
    safety = restore.safety_backup
    note = (
        f" What was there before is in {safety.file_name}."
        if touched and safety is not None and safety.status == Backup.Status.DONE
        else ""
    )
    finish(sandbox, JOB, S.ERROR if touched else None, detail + note, audited=False)
