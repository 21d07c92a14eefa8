"""Making backups: the request (claim the sandbox, record the row, audit, queue), the writing of
the archive, and how every backup ends. Also verify, delete and rotation."""

import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from controlpanel.queue import enqueue_on_commit
from controlpanel.retention import beyond_keeping
from sandboxes import engine, live, policy, workspace
from sandboxes.models import Sandbox
from sandboxes.services import SandboxError, SystemActor, finish
from sandboxes.services.auditing import audit
from sandboxes.services.claims import beating, claim, heartbeat, take_run
from sandboxes.services.hosting import host_problem
from sandboxes.services.rules import policy_rules
from sandboxes.services.specs import helper_spec, home_target
from storage import pool
from storage import services as storage
from teams.permissions import Role, actor_name, actor_user, authorize

from .. import archive
from ..models import Backup, BackupSchedule, Restore

log = logging.getLogger(__name__)
S = Sandbox.Status
JOB = Sandbox.Job.BACKUP
BACKUP_FROM = frozenset({S.RUNNING, S.STOPPED, S.PAUSED, S.ERROR})


class BackupError(SandboxError):
    """A backup request that cannot be carried out; the message is shown to the user."""


class Stopped(archive.ArchiveError):
    """A backup stopped on purpose: cancelled, or past its byte or time cap."""


class Cancelled(Stopped):
    pass


def backup_root() -> Path:
    """BACKUP_ROOT, made 0700 if missing (archives hold everything a sandbox has)."""
    root = settings.BACKUP_ROOT
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if root.stat().st_mode & 0o077:
        root.chmod(0o700)
    return root


def config_of(sandbox: Sandbox) -> dict:
    """The sandbox's settings, as a manifest records them."""
    return {
        "name": sandbox.name,
        "uuid": str(sandbox.uuid),
        "team": sandbox.team.slug,
        "image": sandbox.image,
        "memory_mb": sandbox.memory_mb,
        "cpus": str(sandbox.cpus),
        "pids_limit": sandbox.pids_limit,
        "network_mode": sandbox.network_mode,
        "egress_presets": list(sandbox.egress_presets or []),
        "egress_allow": sandbox.egress_allow,
        "writable_root": not sandbox.read_only_rootfs,
        "low_ports_and_ping": sandbox.low_ports_and_ping,
        "runtime": sandbox.runtime,
        "selinux_level": sandbox.selinux_level,
        "mounts": [{"host_path": m.host_path, "container_path": m.container_path, "read_only": m.read_only} for m in sandbox.mounts.all()],
    }


def _file_name(sandbox_name: str) -> str:
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    name, n = f"{sandbox_name}-{stamp}.tar.gz", 2
    while Backup.objects.filter(file_name=name).exists() or (settings.BACKUP_ROOT / name).exists():
        name, n = f"{sandbox_name}-{stamp}-{n}.tar.gz", n + 1
    return name


def new_backup_row(actor, sandbox: Sandbox, kind: str) -> Backup:
    """The row of a backup about to be written (status running)."""
    return Backup.objects.create(
        sandbox=sandbox,
        team_id=sandbox.team_id,
        sandbox_name=sandbox.name,
        file_name=_file_name(sandbox.name),
        kind=kind,
        created_by=actor_user(actor),
        created_by_name=actor_name(actor),
    )


def backup_request(
    *, actor, sandbox: Sandbox, kind: str = Backup.Kind.MANUAL, source_ip: str | None = None, enqueue: bool = True
) -> Backup:
    """Claim the sandbox for a backup, record it and queue it. A backup only reads, so it may run
    while an incident holds the sandbox; nothing else changes the sandbox while it runs."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    if problem := host_problem(sandbox):  # it would hold the sandbox busy in a queue no one reads
        raise SandboxError(problem)
    with transaction.atomic():
        claim(sandbox=sandbox, action=JOB, allowed_from=BACKUP_FROM, while_on_hold=True)
        backup = new_backup_row(actor, sandbox, kind)
        audit(actor, "backup.requested", sandbox, {"backup": backup.file_name, "kind": kind}, source_ip)
        if enqueue:
            queue_backup(backup.pk)
        live.sandbox_changed(sandbox)
    return backup


def queue_backup(backup_id: int) -> None:
    """Queue the backup's task once the claim commits; if the queue cannot take it, end the
    backup with the reason instead of leaving the sandbox busy."""
    from ..tasks import backup_task

    def refused():
        backup = Backup.objects.filter(pk=backup_id).select_related("sandbox").first()
        if backup is not None and backup.sandbox is not None:
            _end(backup, backup.sandbox, ok=False, detail="The backup was not started: the task queue (Redis) is not reachable.")

    enqueue_on_commit(backup_task, backup_id, what=f"backup {backup_id}", on_refused=refused)


def resume_job(sandbox: Sandbox, model: type[Backup | Restore], job: str, task: Any) -> None:
    """Queue `task` again for the sandbox's newest running `model` (a backup or a restore)
    whose worker is gone (claims.requeue_stale_actions calls the resumers); with none, release
    the sandbox's `job` claim."""
    row = model.objects.filter(sandbox=sandbox, status=model.Status.RUNNING).order_by("-pk").first()
    if row is None:
        finish(sandbox, job, None, f"The {model._meta.verbose_name}'s record is gone; the sandbox was released.")
        return
    task.delay(row.pk)


def resume_backup(sandbox: Sandbox) -> None:
    from ..tasks import backup_task

    resume_job(sandbox, Backup, JOB, backup_task)


def fail_backup_row(backup: Backup, detail: str) -> None:
    """Mark a backup written under another job's claim (a safety or evidence backup) failed,
    and remove what its run left."""
    archive.remove_partial(archive.partial_path(str(settings.BACKUP_ROOT / backup.file_name)))
    Backup.objects.filter(pk=backup.pk, status=Backup.Status.RUNNING).update(
        status=Backup.Status.FAILED, detail=detail[:2000], finished_at=timezone.now()
    )


def backup_perform(*, backup_id: int) -> None:
    """Write a claimed backup. Safe to run again: a run whose worker died starts the archive
    over (the temporary file is replaced), and an archive that was completed under its final
    name before the worker died is checked and recorded instead of written twice.

    A sandbox in the storage pool is held only for the instant of a snapshot; the archive is
    then written from the snapshot while Stop, Pause, an incident or Destroy may act on the
    sandbox. A sandbox with plain folders is held while its folders are read."""
    backup = Backup.objects.filter(pk=backup_id, status=Backup.Status.RUNNING).select_related("sandbox").first()
    if backup is None:
        return
    if backup.sandbox is None or backup.sandbox.status in (S.DESTROYING, S.DESTROYED):
        _end(backup, backup.sandbox, ok=False, detail="The sandbox was destroyed before its backup finished.", release=False)
        return
    if backup.sandbox.in_pool and pool.active():
        _perform_from_snapshot(backup, backup.sandbox)
        return
    sandbox = take_run(backup.sandbox.pk, JOB)
    if sandbox is None:
        return
    if sandbox.attempts > settings.SANDBOX_MAX_ATTEMPTS:
        _end(backup, sandbox, ok=False, detail=f"Given up after {settings.SANDBOX_MAX_ATTEMPTS} attempts: its worker stopped each time.")
        return
    with heartbeat(sandbox.pk, JOB):
        _write_and_end(backup, sandbox, release=True)


def _write_and_end(backup: Backup, sandbox: Sandbox, *, release: bool, snapshot: Path | None = None) -> None:
    try:
        write_backup(sandbox, backup, snapshot=snapshot, capped=True)
    except Cancelled:
        backup.refresh_from_db()
        _end(backup, sandbox, ok=False, detail=_cancelled_detail(backup), release=release)
    except Stopped as exc:
        _end(backup, sandbox, ok=False, detail=f"Stopped: {exc}.", release=release)
    except (archive.ArchiveError, engine.EngineError, workspace.WorkspaceError, policy.PolicyViolation, pool.PoolError, OSError) as exc:
        _end(backup, sandbox, ok=False, detail=f"The backup failed: {_reason(exc)}", release=release)
    except SoftTimeLimitExceeded:
        _end(backup, sandbox, ok=False, detail="The backup took longer than its task's time limit and was stopped.", release=release)
    except Exception as exc:  # a backup always ends; the log has the traceback
        log.exception("backup %s failed unexpectedly", backup.file_name)
        _end(
            backup,
            sandbox,
            ok=False,
            detail=f"The backup failed unexpectedly ({type(exc).__name__}: {exc}); see the worker's log.",
            release=release,
        )
    else:
        _end(backup, sandbox, ok=True, detail="", release=release)


def snapshot_dir(backup: Backup) -> Path:
    """Where a pool backup's snapshot is while the archive is written from it."""
    return settings.WORKSPACE_ROOT / pool.SNAPSHOTS / f"{backup.sandbox.uuid}-backup-{backup.pk}"  # type: ignore[union-attr]


def _perform_from_snapshot(backup: Backup, sandbox: Sandbox) -> None:
    """Snapshot under the sandbox's claim (milliseconds), release it, then write the archive from
    the snapshot with the backup's own heartbeat."""
    snap = snapshot_dir(backup)
    held = take_run(sandbox.pk, JOB)
    if held is not None:
        sandbox = held
        if backup.cancel_requested:
            _end(backup, sandbox, ok=False, detail=_cancelled_detail(backup))
            return
        try:
            with heartbeat(sandbox.pk, JOB):
                if not snap.is_dir():
                    storage.snapshot_now(sandbox, snap)
        except (pool.PoolError, engine.EngineError, OSError) as exc:
            _end(backup, sandbox, ok=False, detail=f"The backup's snapshot could not be taken: {exc}")
            return
        finish(sandbox, JOB, None, "", outcome="done", audited=False)  # the sandbox is free again
    elif not snap.is_dir():
        return  # the snapshot is still being taken by a live worker (it holds the claim)
    if not _take_row(backup):
        return
    try:
        with _row_heartbeat(backup.pk):
            _write_and_end(backup, sandbox, release=False, snapshot=snap)
    finally:
        _drop_snapshot(backup)


def _take_row(backup: Backup) -> bool:
    """Take the reading of a backup's snapshot: only when nobody reads it, or its reader's
    heartbeat stopped; past SANDBOX_MAX_ATTEMPTS runs it ends failed."""
    stale = timezone.now() - timedelta(seconds=settings.SANDBOX_STALE_SECONDS)
    taken = (
        Backup.objects.filter(pk=backup.pk, status=Backup.Status.RUNNING)
        .filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale))
        .update(heartbeat_at=timezone.now(), attempts=F("attempts") + 1)
    )
    if not taken:
        return False
    backup.refresh_from_db()
    if backup.attempts > settings.SANDBOX_MAX_ATTEMPTS:
        _end(
            backup,
            backup.sandbox,
            ok=False,
            detail=f"Given up after {settings.SANDBOX_MAX_ATTEMPTS} attempts: its worker stopped each time.",
            release=False,
        )
        _drop_snapshot(backup)
        return False
    return True


def _row_heartbeat(backup_id: int):
    return beating(
        lambda: Backup.objects.filter(pk=backup_id, status=Backup.Status.RUNNING).update(heartbeat_at=timezone.now()), f"backup {backup_id}"
    )


def _drop_snapshot(backup: Backup) -> None:
    sandbox = backup.sandbox
    if sandbox is None or not pool.active():
        return
    try:
        pool.delete(snapshot_dir(backup), group=sandbox.disk_group, limit_mb=lambda: storage.limit_now(sandbox))
    except pool.PoolError:
        log.warning("could not delete the snapshot of backup %s", backup.file_name, exc_info=True)


def backup_cancel(*, actor, backup: Backup, source_ip: str | None = None) -> None:
    """Stop a running backup: its worker ends it at its next block (failed, "cancelled"), its
    partial file removed. One whose worker is gone (no heartbeat within SANDBOX_STALE_SECONDS)
    is ended here and now, so that it can be deleted."""
    if not isinstance(actor, SystemActor):
        authorize(actor, backup.team, Role.OPERATOR)
    if backup.status != Backup.Status.RUNNING:
        raise BackupError(f"{backup.file_name} is not running.")
    by = actor_name(actor)
    Backup.objects.filter(pk=backup.pk, status=Backup.Status.RUNNING).update(cancel_requested=True, detail=f"Cancelled by {by}.")
    audit_backup(actor, backup, "backup.cancel_requested", {}, source_ip)
    backup.refresh_from_db()
    stale = timezone.now() - timedelta(seconds=settings.SANDBOX_STALE_SECONDS)
    sandbox = backup.sandbox
    holds_claim = sandbox is not None and Sandbox.objects.filter(pk=sandbox.pk, pending_action=JOB).exists()
    reading = backup.heartbeat_at is not None and backup.heartbeat_at >= stale
    claim_live = holds_claim and Sandbox.objects.filter(pk=sandbox.pk, heartbeat_at__gte=stale).exists()  # type: ignore[union-attr]
    if not reading and not claim_live:
        _end(backup, sandbox, ok=False, detail=_cancelled_detail(backup), release=holds_claim)
        _drop_snapshot(backup)


def cancel_running(sandbox: Sandbox) -> None:
    """Destroy: every running backup of the sandbox is cancelled."""
    for backup in Backup.objects.filter(sandbox=sandbox, status=Backup.Status.RUNNING).select_related("team", "sandbox"):
        try:
            backup_cancel(actor=SystemActor("destroy"), backup=backup)
        except BackupError:
            continue


def backups_repair() -> int:
    """Periodic: a pool backup whose reader's heartbeat stopped (its worker died, or its task was
    lost) is queued again, or ended failed past its attempts; a backup of a destroyed sandbox
    ends failed. Returns how many were touched."""
    from ..tasks import backup_task

    stale = timezone.now() - timedelta(seconds=settings.SANDBOX_STALE_SECONDS)
    touched = 0
    for backup in Backup.objects.filter(status=Backup.Status.RUNNING, heartbeat_at__lt=stale).select_related("sandbox"):
        touched += 1
        if (
            backup.sandbox is None
            or backup.sandbox.status in (S.DESTROYING, S.DESTROYED)
            or backup.attempts >= settings.SANDBOX_MAX_ATTEMPTS
        ):
            _end(
                backup,
                backup.sandbox,
                ok=False,
                detail=f"Given up: its worker stopped {backup.attempts} time(s) before it finished.",
                release=False,
            )
            _drop_snapshot(backup)
        else:
            backup_task.delay(backup.pk)
    # A pool backup that never started reading and whose sandbox no backup holds any more (its
    # claim was taken by another backup's redelivered run, say): nothing would ever run it.
    waiting = Backup.objects.filter(status=Backup.Status.RUNNING, heartbeat_at__isnull=True, created_at__lt=stale).select_related("sandbox")
    for backup in waiting:
        sandbox = backup.sandbox
        if sandbox is not None and sandbox.in_pool and sandbox.pending_action != JOB and not snapshot_dir(backup).is_dir():
            touched += 1
            _end(backup, sandbox, ok=False, detail="Its run was lost before it began; back up again.", release=False)
    return touched + _sweep_snapshots()


def _sweep_snapshots() -> int:
    """Delete the snapshots of backups that no longer run (a run that ended while another one
    was still taking its snapshot, say): a sandbox's data never stays behind in the pool."""
    folder = settings.WORKSPACE_ROOT / pool.SNAPSHOTS
    if not pool.active() or not folder.is_dir():
        return 0
    newest = Backup.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    running = {
        snapshot_dir(b).name for b in Backup.objects.filter(status=Backup.Status.RUNNING, sandbox__isnull=False).select_related("sandbox")
    }
    swept = 0
    for entry in os.listdir(folder):
        pk = entry.rpartition("-backup-")[2]
        # A backup made after `running` was read is not in it: its snapshot is left alone.
        if "-backup-" in entry and entry not in running and pk.isdigit() and int(pk) <= newest:
            try:
                pool.delete(folder / entry)
                swept += 1
            except pool.PoolError:
                log.warning("could not delete the leftover snapshot %s", entry, exc_info=True)
    return swept


def _cancelled_detail(backup: Backup) -> str:
    return backup.detail if backup.detail.startswith("Cancelled") else "Cancelled."


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.errno == 28:
        return "the disk holding the panel's backup folder (BACKUP_ROOT) is full. No partial archive was left; earlier backups are intact."
    if isinstance(exc, policy.PolicyViolation):
        return " ".join(exc.problems)
    return str(exc)


def _end(backup: Backup, sandbox: Sandbox | None, *, ok: bool, detail: str, release: bool = True) -> None:
    """Record how the backup ended, audit it, release the sandbox (`release`: the run holds its
    claim), rotate scheduled backups."""
    backup.refresh_from_db()
    if not ok:  # a run that died may have left its temporary file
        archive.remove_partial(archive.partial_path(str(settings.BACKUP_ROOT / backup.file_name)))
    with transaction.atomic():
        if not ok:
            Backup.objects.filter(pk=backup.pk, status=Backup.Status.RUNNING).update(
                status=Backup.Status.FAILED, detail=detail, finished_at=timezone.now(), attempts=0, heartbeat_at=None
            )
            audit_backup(SystemActor("system"), backup, "backup.failed", {"detail": detail})
        else:
            Backup.objects.filter(pk=backup.pk).update(attempts=0, heartbeat_at=None)
            audit_backup(
                SystemActor("system"), backup, "backup.done", {"sha256": backup.sha256, "size": backup.size_bytes, "files": backup.files}
            )
        if release and sandbox is not None:
            finish(sandbox, JOB, None, "" if ok else detail, outcome="done" if ok else "failed", audited=False)
    if sandbox is not None and not release:
        live.sandbox_changed(sandbox)
    if (
        ok
        and sandbox is not None
        and backup.kind == Backup.Kind.SCHEDULED
        and not Sandbox.objects.filter(pk=sandbox.pk, on_hold=True).exists()
    ):
        rotate(sandbox)  # never while an incident holds it: the backups from before it are what a reset needs


def _throttled(backup_id: int, *, capped: bool = True, every: float = 0.5) -> Callable[[int, int], None]:
    """The archive writer's progress callback: records progress every `every` seconds, and
    stops the backup (raising Stopped) when it is cancelled or past BACKUP_MAX_BYTES or
    BACKUP_MAX_SECONDS; holds it to BACKUP_MAX_MBPS."""
    started = time.monotonic()
    last = [0.0]

    def progress(files: int, data: int) -> None:
        now = time.monotonic()
        if capped and data > settings.BACKUP_MAX_BYTES:
            raise Stopped(f"it read more than BACKUP_MAX_BYTES ({settings.BACKUP_MAX_BYTES} bytes) and was stopped")
        if capped and now - started > settings.BACKUP_MAX_SECONDS:
            raise Stopped(f"it ran longer than BACKUP_MAX_SECONDS ({settings.BACKUP_MAX_SECONDS} s) and was stopped")
        if settings.BACKUP_MAX_MBPS:
            ahead = data / (settings.BACKUP_MAX_MBPS * 1024 * 1024) - (now - started)
            if ahead > 0:
                time.sleep(min(ahead, 1.0))
        if now - last[0] >= every:
            last[0] = now
            Backup.objects.filter(pk=backup_id).update(progress_files=files, progress_bytes=data)
            if Backup.objects.filter(pk=backup_id, cancel_requested=True).exists():
                raise Cancelled("it was cancelled")

    return progress


def write_backup(
    sandbox: Sandbox, backup: Backup, *, level: int | None = None, snapshot: Path | None = None, capped: bool = False
) -> Backup:
    """Write the archive of `sandbox` for `backup` and record it done. A sandbox in the storage
    pool is read from a snapshot (`snapshot`, or one taken here under the caller's claim: a
    restore's or an incident's), so the archive is the sandbox at one instant; one with plain
    folders is read as it is, under the caller's claim. `level`: gzip's, by default
    BACKUP_COMPRESSION_LEVEL. `capped`: held to the backup caps (evidence is not)."""
    if sandbox.in_pool and pool.active() and snapshot is None:
        with storage.read_only_copy(sandbox, f"backup-{backup.pk}") as taken:
            return write_backup(sandbox, backup, level=level, snapshot=taken, capped=capped)
    final = backup_root() / backup.file_name
    if final.exists():
        return _record_existing(sandbox, backup, final)
    manifest = {
        "sandbox": config_of(sandbox),
        "created_at": timezone.now().isoformat(),
        "created_by": backup.created_by_name,
        "kind": backup.kind,
    }
    docker = engine.engine_for(sandbox)
    level = settings.BACKUP_COMPRESSION_LEVEL if level is None else level
    with archive.ArchiveWriter(str(final), level=level, progress=_throttled(backup.pk, capped=capped)) as writer:
        for folder in workspace.FOLDERS:
            fd = _open_folder(sandbox, folder) if snapshot is None else policy.open_dir_nofollow(str(snapshot / folder), flags=os.O_RDONLY)
            archive.add_tree(writer, fd, f"{archive.WORKSPACE}/{folder}")
        if snapshot is not None:
            home = snapshot / workspace.HOME
            if home.is_dir():
                archive.add_tree(writer, policy.open_dir_nofollow(str(home), flags=os.O_RDONLY), archive.HOME)
        elif docker.volume_exists(sandbox.volume_name):
            with docker.helper(helper_spec(sandbox), rules=policy_rules()) as helper_id:
                stream = archive.ChunkReader(docker.read_archive(helper_id, home_target()))
                archive.add_engine_tar(writer, stream, archive.HOME)  # type: ignore[arg-type]
        size, sha256 = writer.commit(manifest, mtime=time.time())
        files, data = writer.done.files, writer.done.bytes
    Backup.objects.filter(pk=backup.pk).update(
        status=Backup.Status.DONE,
        size_bytes=size,
        sha256=sha256,
        files=files,
        data_bytes=data,
        progress_files=files,
        progress_bytes=data,
        config=manifest["sandbox"],
        finished_at=timezone.now(),
    )
    backup.refresh_from_db()
    return backup


def _open_folder(sandbox: Sandbox, folder: str) -> int:
    """An fd of one of the sandbox's folders, opened without following a link, and checked to
    be the very folder recorded at create (a folder swapped on the host is not backed up)."""
    try:
        return workspace.open_sandbox_folder(sandbox, folder, recorded=True)
    except workspace.FolderReplaced as exc:
        raise workspace.WorkspaceError(f"{exc}; it is not backed up.") from None


def _record_existing(sandbox: Sandbox, backup: Backup, final: Path) -> Backup:
    """An archive finished under its final name by a run that died before recording it: check
    it, and record it (or remove it and fail, if it does not hold)."""
    checked = archive.verify(str(final))
    if not checked.ok:
        final.unlink()
        raise archive.ArchiveError("an earlier run left an archive that does not verify; it was removed. Back up again.")
    Backup.objects.filter(pk=backup.pk).update(
        status=Backup.Status.DONE,
        size_bytes=final.stat().st_size,
        sha256=checked.sha256,
        files=checked.files,
        data_bytes=checked.bytes,
        config=(checked.manifest or {}).get("sandbox") or {},
        finished_at=timezone.now(),
    )
    backup.refresh_from_db()
    return backup


# --- verify, delete, rotate -------------------------------------------------------------------


def backup_verify(*, backup: Backup) -> Backup:
    """Re-hash the archive against its manifest and its recorded sha256; record the outcome."""
    problems: list[str] = []
    if not backup.path.exists():
        problems.append(f"{backup.file_name} is missing from the panel's backup folder (BACKUP_ROOT).")
    else:
        checked = archive.verify(str(backup.path))
        problems += checked.problems
        if backup.sha256 and checked.sha256 and checked.sha256 != backup.sha256:
            problems.append("The file's sha256 differs from the one recorded when it was made: it was changed or replaced.")
    with transaction.atomic():
        Backup.objects.filter(pk=backup.pk).update(
            verified_at=timezone.now(), verified_ok=not problems, verify_detail=" ".join(problems[:20])
        )
        audit_backup(
            SystemActor("system"), backup, "backup.verified" if not problems else "backup.verify_failed", {"problems": problems[:20]}
        )
    backup.refresh_from_db()
    return backup


def audit_backup(actor, backup: Backup, action: str, details: dict | None = None, source_ip: str | None = None) -> None:
    from audit.services import audit_record

    audit_record(
        actor=actor,
        action=action,
        target=backup.sandbox_name,
        sandbox_uuid=backup.sandbox.uuid if backup.sandbox else None,
        team_id=backup.team_id,
        details={"backup": backup.file_name, **(details or {})},
        source_ip=source_ip,
    )


def backup_delete(*, actor, backup: Backup, source_ip: str | None = None, reason: str = "") -> None:
    """Delete the archive and its row. Evidence, running backups and backups a running restore
    reads are never deleted."""
    if not isinstance(actor, SystemActor):
        authorize(actor, backup.team, Role.ADMIN)
    if backup.is_evidence:
        raise BackupError(f"{backup.file_name} is evidence of an incident; it is never deleted by the panel.")
    if backup.status == Backup.Status.RUNNING:
        raise BackupError(f"{backup.file_name} is still being written.")
    if backup.restores.filter(status="running").exists():
        raise BackupError(f"{backup.file_name} is being restored; delete it when the restore has ended.")
    with transaction.atomic():
        audit_backup(actor, backup, "backup.deleted", {"sha256": backup.sha256, "reason": reason}, source_ip)
        backup.delete()
        transaction.on_commit(lambda: archive.remove_partial(str(backup.path)))


def _created(backup: Backup) -> datetime:
    return backup.created_at


def rotate(sandbox: Sandbox) -> int:
    """Delete the sandbox's scheduled backups that its schedule no longer keeps."""
    schedule = BackupSchedule.objects.filter(sandbox=sandbox).first()
    if schedule is None or (schedule.keep_last is None and schedule.keep_days is None):
        return 0
    scheduled = Backup.objects.filter(sandbox=sandbox, kind=Backup.Kind.SCHEDULED, status=Backup.Status.DONE).order_by("-created_at", "-id")
    gone = beyond_keeping(scheduled, keep_last=schedule.keep_last, keep_days=schedule.keep_days, now=timezone.now(), taken=_created)
    removed = 0
    for backup in gone:
        try:
            backup_delete(actor=SystemActor("rotation"), backup=backup, reason="rotation")
            removed += 1
        except (BackupError, PermissionDenied):
            continue
    return removed
