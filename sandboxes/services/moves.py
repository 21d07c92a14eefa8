"""Moving a stopped sandbox to another host (issue 16): files, home and identity intact.

The sandbox is claimed for the whole move (Job.MOVE: nothing else changes it meanwhile) and
stays whole on its source host until the target has restored it; only then does its row name
the target, and its next start makes its container there. Four steps, each a task on the queue
of the machine that can do it, each recorded on the Move row so that a redelivered task carries
on where the last one stopped (or finds its step done and ends):

1. archive (the source host's jobs queue): the backup writer archives its six folders and home
   into the source's BACKUP_ROOT, as a backup of the sandbox (kept: after the move it is a
   backup of it on the target), then copies the archive into a transfer volume on the source's
   engine.
2. transfer (the panel's jobs queue: the panel's machine reaches every host's engine, the local
   one on its socket and each agent's through the TLS endpoint it joined with; an agent reaches
   only its own): the archive goes from the source's transfer volume to the target's, engine
   to engine, through Docker's archive API (`get_archive` from a helper container on the
   source, streamed into `put_archive` of a helper on the target). The helpers are the
   backups' own profile (never started, no network, one volume whose name carries the
   sandbox's UUID), so the policy judges them like every other helper; no host folder is
   mounted into anything.
3. restore (the target host's jobs queue): the archive is copied out of the transfer volume into
   the target's BACKUP_ROOT and its sha256 compared with the one the source recorded; then the
   row is pointed at the target and the restore service unpacks it into the target's own pool
   and workspace root, exactly as a restore into a new sandbox does (every member judged,
   the manifest matched, the settings judged by the policy). Any failure removes what the
   target made and points the row back at the source, whose data was never touched.
4. cleanup (the source host's jobs queue, after the move ended): a moved sandbox's container,
   home volume, download volumes, folders and quota group there are removed, and its archive
   (now on the target); the transfer volumes go in every case.

Refused: a sandbox that is not stopped, held by an incident or busy; with extra host folders or
checkpoints (snapshots in the source's pool cannot move); to its own host, or to a host that is
disabled, draining, unreachable, without capacity for it (reserved memory or disk past what the
host has), or whose engine the panel cannot reach; between two hosts whose folders are both on
this machine (they share its workspace root: nothing to move, and a clean-up would remove the
very folders moved).
"""

import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hosts.health import unreachable_reason
from hosts.models import Host
from hosts.placement import remote_reason, with_load
from teams.permissions import Role, SystemActor, actor_name, authorize

from .. import engine, live, policy, workspace
from ..models import Move, Sandbox
from . import warm
from .auditing import audit
from .claims import claim, claimed, finish, heartbeat, take_run
from .errors import LostClaim, SandboxError
from .hosting import host_problem
from .rules import policy_rules
from .specs import helper_spec, home_target, labels

log = logging.getLogger(__name__)
S = Sandbox.Status
JOB = Sandbox.Job.MOVE
STEP = Move.Step
MOVE_FROM = frozenset({S.STOPPED})
LABEL_TRANSFER = "ccpanel.transfer"  # on the helpers and volumes that carry archives: "move" or "download"
# The row's fields that say where the sandbox's data is on its host.
PLACE_FIELDS = ("host_path_ids", "disk_group", "container_id", "warm_slot")


class MoveError(SandboxError):
    """A move that cannot be made; the message says why."""


# --- the request -------------------------------------------------------------------------------


def move_targets(sandbox: Sandbox) -> list[Host]:
    """The hosts the page offers: enabled, not draining, not the sandbox's own."""
    return list(Host.objects.filter(enabled=True, draining=False).exclude(pk=sandbox.host.pk).order_by("name"))


def refusal(sandbox: Sandbox, target: Host) -> str:
    """Why `sandbox` cannot move to `target` now ("" when it can), judged on fresh rows."""
    source = Host.objects.get(pk=sandbox.host.pk)
    if target.pk == source.pk:
        return f"{sandbox.name} is on {target.name} already."
    if sandbox.status != S.STOPPED:
        return f"{sandbox.name} is {sandbox.status}: only a stopped sandbox moves. Stop it first."
    if sandbox.on_hold:
        return f"{sandbox.name} is held by an open incident; it moves once the incident is closed."
    if sandbox.pending_action:
        return f"{sandbox.name} is busy ({sandbox.pending_action} in progress); try again shortly."
    if not target.enabled:
        return f"Host {target.name} is disabled: it takes no sandbox."
    if target.draining:
        return f"Host {target.name} is draining: it takes no sandbox."
    for host in (source, target):
        if why := unreachable_reason(host):
            return f"{why} Nothing moves to or from it until it answers."
    if remote := remote_reason(target):
        return remote
    for host in (source, target):
        if (engine.host_of(host).base_url or "").startswith(engine.AGENT_SCHEME):
            return f"The panel has no way to host {host.name}'s engine (it joined without --panel-url): the archive cannot be carried."
    if not source.agent and not target.agent:
        return (
            f"Hosts {source.name} and {target.name} both keep their folders on this machine's workspace root: "
            "there is nothing to move between them."
        )
    return contents_problem(sandbox, source) or _capacity_problem(sandbox, target)


def contents_problem(sandbox: Sandbox, source: Host) -> str:
    """What the sandbox has that cannot move (or not now); judged again once it is claimed, when
    nothing else can add any: a checkpoint or a backup that ended between the first look and the
    claim would otherwise be moved past (its snapshot removed with the source's pool group)."""
    from backups.models import Backup

    if Backup.objects.filter(sandbox=sandbox, status=Backup.Status.RUNNING).exists():
        # A backup reads its snapshot after letting go of the claim: its end still needs the source's copy.
        return f"A backup of {sandbox.name} is being written; it moves once that has ended."
    if sandbox.mounts.exists():
        return f"{sandbox.name} has extra host folders: they are on {source.name}'s disk and do not move. Remove them first."
    from storage.models import Checkpoint

    if Checkpoint.objects.filter(sandbox=sandbox).exists():
        return (
            f"{sandbox.name} has checkpoints, snapshots in {source.name}'s storage pool that cannot move: "
            "delete them first (back up if needed)."
        )
    return ""


def _capacity_problem(sandbox: Sandbox, target: Host) -> str:
    loaded = with_load(Host.objects.filter(pk=target.pk)).get()
    memory = loaded.reserved_memory_mb + sandbox.memory_mb  # type: ignore[attr-defined]
    if memory > target.memory_mb:
        return (
            f"Host {target.name} lacks the capacity: its sandboxes reserve {loaded.reserved_memory_mb} MB of its "  # type: ignore[attr-defined]
            f"{target.memory_mb} MB of memory, and {sandbox.name} needs {sandbox.memory_mb} MB more."
        )
    disk = sandbox.disk_mb or settings.SANDBOX_DEFAULT_DISK_MB
    if target.disk_mb and loaded.reserved_disk_mb + disk > target.disk_mb:  # type: ignore[attr-defined]
        return (
            f"Host {target.name} lacks the capacity: its sandboxes reserve {loaded.reserved_disk_mb} MB of its "  # type: ignore[attr-defined]
            f"{target.disk_mb} MB of disk, and {sandbox.name} needs {disk} MB more."
        )
    return ""


def move_request(*, actor, sandbox: Sandbox, target_name: str, source_ip: str | None = None, enqueue: bool = True) -> Move:
    """Claim a stopped sandbox for a move to the host `target_name` and queue its first step.
    Raises MoveError (or SandboxError) saying why it cannot move now."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    sandbox = Sandbox.objects.select_related("team", "host").get(pk=sandbox.pk)
    target = Host.objects.filter(name=target_name).first()
    if target is None:
        raise MoveError(f"There is no host named {target_name!r}.")
    if problem := host_problem(sandbox) or refusal(sandbox, target):
        raise MoveError(problem)
    with transaction.atomic():
        claim(sandbox=sandbox, action=JOB, allowed_from=MOVE_FROM)
        if problem := contents_problem(sandbox, sandbox.host):
            raise MoveError(problem)  # the claim is rolled back with the transaction
        move = Move.objects.create(
            sandbox=sandbox,
            source=sandbox.host,
            target=target,
            requested_by_name=actor_name(actor),
            source_state={f: getattr(sandbox, f) for f in PLACE_FIELDS},
        )
        audit(actor, "sandbox.move_requested", sandbox, {"from": sandbox.host.name, "to": target.name}, source_ip)
        if enqueue:
            queue_step(move.pk, STEP.ARCHIVE)
        live.sandbox_changed(sandbox)
    return move


def queue_step(move_id: int, step: str) -> None:
    """Queue a step once the transaction commits (hosts.queues routes it to the right machine);
    a queue that refuses it ends the move, the sandbox left as it was."""
    from controlpanel.queue import enqueue_on_commit

    from ..tasks import move_task

    def refused():
        move = Move.objects.filter(pk=move_id, status=Move.Status.RUNNING).select_related("sandbox", "source", "target").first()
        if move is not None and step != STEP.CLEANUP:
            _fail(move, "The move was not carried on: the task queue (Redis) is not reachable.")

    enqueue_on_commit(move_task, move_id, step, what=f"move {move_id} ({step})", on_refused=refused)


def resume_move(sandbox: Sandbox) -> None:
    """A move whose worker is gone (claims.requeue_stale_actions): queue its current step again,
    or release the sandbox if no move is running."""
    from ..tasks import move_task

    running = Move.objects.filter(sandbox=sandbox, status=Move.Status.RUNNING).select_related("sandbox", "source", "target")
    move = running.order_by("-pk").first()
    if move is None:
        finish(sandbox, JOB, None, "The move's record is gone; the sandbox was released.")
        return
    if move.step == STEP.RESTORE and (why := unreachable_reason(move.target)):
        # Nothing reads the target's queue: the sandbox, whole on its source, is not held for as
        # long as that host is away (a restore it had begun is removed there by nothing: logged).
        _fail(move, f"The move was given up at its restore: {why}")
        return
    move_task.delay(move.pk, move.step)


# --- the steps -----------------------------------------------------------------------------------


def move_perform(*, move_id: int, step: str) -> None:
    """Carry out one step of a move, if it is the move's current step; a step whose worker died
    is run again from its start (each is safe to run twice)."""
    move = Move.objects.select_related("sandbox__team", "source", "target").filter(pk=move_id).first()
    if move is None or move.step != step:
        return
    if step == STEP.CLEANUP:
        _cleanup(move)
        return
    if move.status != Move.Status.RUNNING:
        return
    sandbox = take_run(move.sandbox_id, JOB)
    if sandbox is None:
        if not Sandbox.objects.filter(pk=move.sandbox_id, pending_action=JOB).exists():
            _taken_over(move, step)  # Destroy took the sandbox between two steps
        return
    if sandbox.on_hold:  # declared during the move: its evidence (container, logs) is on the source
        _fail(move, held_detail(move))
        return
    if sandbox.attempts > settings.SANDBOX_MAX_ATTEMPTS:
        _fail(move, f"Given up after {settings.SANDBOX_MAX_ATTEMPTS} attempts at its {step}: its worker stopped each time.")
        return
    following: tuple[str, dict] | None = None
    with heartbeat(sandbox.pk, JOB):
        try:
            following = {STEP.ARCHIVE: _archive, STEP.TRANSFER: _transfer, STEP.RESTORE: _restore}[step](move, sandbox)  # type: ignore[index]
        except LostClaim:
            log.warning("move %s lost its claim on %s (destroyed?)", move.pk, sandbox.name)
            _ended(move, ok=False, detail="The sandbox was taken over (destroyed) during its move.")
        except (SandboxError, engine.EngineError, workspace.WorkspaceError, policy.PolicyViolation, OSError, tarfile.TarError) as exc:
            reason = " ".join(exc.problems) if isinstance(exc, policy.PolicyViolation) else str(exc) or type(exc).__name__
            _fail(move, f"The move failed at its {step}: {reason}")
        except SoftTimeLimitExceeded:
            _fail(move, f"The move's {step} took longer than its task's time limit and was stopped.")
        except Exception as exc:  # a move always ends; the log has the traceback
            log.exception("move %s failed unexpectedly at %s", move.pk, step)
            _fail(move, f"The move failed unexpectedly at its {step} ({type(exc).__name__}: {exc}); see the worker's log.")
    if following is not None:  # once the heartbeat has stopped: the next step's worker takes the run at once
        _advance(move, sandbox, following[0], **following[1])


def held_detail(move: Move) -> str:
    return (
        f"An incident was declared on the sandbox during its move: it stays on {move.source.name}, as it was, where the "
        "incident's steps find its container and logs."
    )


def _taken_over(move: Move, step: str) -> None:
    """The sandbox is no longer the move's (Destroy preempts it) when its next step comes: the
    move ends failed, its clean-up queued, instead of staying "running" with nothing to carry it
    on. The restore step runs on the target's machine, whose transfer volume (the archive, all
    the sandbox's files) only it reaches: that goes here."""
    if step == STEP.RESTORE:
        sandbox = Sandbox.objects.select_related("team").get(pk=move.sandbox_id)
        _drop_transfer_volume(engine.engine_for_host(engine.host_of(move.target)), sandbox)
    _ended(move, ok=False, detail=f"The sandbox was taken over (destroyed) before its move's {step}.")


def _advance(move: Move, sandbox: Sandbox, step: str, **changes) -> None:
    """Record the next step and queue it; the claim's heartbeat is cleared so that the next
    step's worker takes the run at once, and its clock restarted."""
    with transaction.atomic():
        Move.objects.filter(pk=move.pk, status=Move.Status.RUNNING).update(step=step, **changes)
        claimed(sandbox, JOB).update(heartbeat_at=None, claimed_at=timezone.now(), attempts=0)
        queue_step(move.pk, step)


def _archive(move: Move, sandbox: Sandbox) -> tuple[str, dict]:
    """Source: the backup writer's archive of the sandbox, copied into the source's transfer volume."""
    from backups.models import Backup
    from backups.services import backup
    from backups.services.backup import new_backup_row

    row = Backup.objects.filter(pk=move.backup_id).first() if move.backup_id else None
    if row is None or row.status == Backup.Status.FAILED:
        row = new_backup_row(SystemActor(f"move to {move.target.name} by {move.requested_by_name}"), sandbox, Backup.Kind.MANUAL)
        Move.objects.filter(pk=move.pk).update(backup_id=row.pk, archive=row.file_name)
    if row.status != Backup.Status.DONE:
        try:
            row = backup.write_backup(sandbox, row)
        except Exception as exc:
            backup.fail_backup_row(row, f"The archive of a move failed: {exc}")
            raise
        audit(SystemActor("system"), "backup.done", sandbox, {"backup": row.file_name, "sha256": row.sha256, "kind": "move"})
    docker = engine.engine_for_host(engine.host_of(move.source))
    with _transfer_helper(docker, sandbox, move) as helper:
        docker.write_archive(helper, home_target(), one_file_tar(row.path, row.file_name))
    return STEP.TRANSFER, {"archive": row.file_name, "sha256": row.sha256, "size_bytes": row.size_bytes}


def _transfer(move: Move, sandbox: Sandbox) -> tuple[str, dict]:
    """Panel: the archive from the source's transfer volume to the target's, engine to engine."""
    source = engine.engine_for_host(engine.host_of(move.source))
    target = engine.engine_for_host(engine.host_of(move.target))
    if not target.image_exists(sandbox.image):
        raise MoveError(f"Host {move.target.name} has no image {sandbox.image}: build it there first (manage.py build_images).")
    try:
        with _transfer_helper(source, sandbox, move) as out, _transfer_helper(target, sandbox, move) as into:
            target.write_archive(into, home_target(), source.read_archive(out, f"{home_target()}/{move.archive}"))
    except BaseException:
        _drop_transfer_volume(target, sandbox)
        raise
    return STEP.RESTORE, {}


def _restore(move: Move, sandbox: Sandbox) -> None:  # the last step: it ends the move
    """Target: the archive out of the transfer volume, its sha256 checked, then restored into this
    host's own pool and workspace root; any failure puts the row back on the source."""
    from backups.models import Backup, Restore
    from backups.services.restore import restore_into, staging_dir

    backup_row = Backup.objects.filter(pk=move.backup_id or 0).first()
    if backup_row is None or backup_row.file_name != move.archive:
        raise MoveError("The move's archive record is gone.")
    docker = engine.engine_for_host(engine.host_of(move.target))
    try:
        path = _fetch_archive(docker, sandbox, move)
    except BaseException:  # a sha256 that does not match, a claim lost: the move ends, its archive goes
        _drop_transfer_volume(docker, sandbox)
        raise
    try:
        sandbox = _onto_target(move, sandbox)
    except BaseException:
        _drop_transfer_volume(docker, sandbox)
        if not Move.objects.filter(pk=move.pk, archive_shared=True).exists():
            path.unlink(missing_ok=True)
        partial_marker(path, move).unlink(missing_ok=True)
        raise
    restore = Restore.objects.create(
        backup=backup_row,
        backup_name=backup_row.file_name,
        sandbox=sandbox,
        into_new=True,
        requested_by_name=move.requested_by_name,
        detail=f"Moving from host {move.source.name}.",
    )
    try:
        restore_into(restore, sandbox, job=JOB)
    except BaseException as exc:
        Restore.objects.filter(pk=restore.pk).update(status=Restore.Status.FAILED, detail=str(exc)[:2000], finished_at=timezone.now())
        if not Move.objects.filter(pk=move.pk, archive_shared=True).exists():
            path.unlink(missing_ok=True)  # the source keeps its own copy (_fail puts the row back there)
        raise
    finally:
        from .. import fdwalk

        fdwalk.remove_path(str(staging_dir(restore, sandbox)))
        _drop_transfer_volume(docker, sandbox)
        partial_marker(path, move).unlink(missing_ok=True)
    Restore.objects.filter(pk=restore.pk).update(
        status=Restore.Status.DONE, detail=f"Moved from host {move.source.name}.", finished_at=timezone.now()
    )
    _ended(move, ok=True, detail=f"Moved from host {move.source.name} to {move.target.name}.")
    return None


def _fetch_archive(docker: engine.Engine, sandbox: Sandbox, move: Move) -> Path:
    """The archive, from the target's transfer volume into this machine's BACKUP_ROOT under its
    own name, written beside and renamed once its sha256 is the one the source recorded."""
    from backups.services import backup_root

    final = backup_root() / move.archive
    if final.exists() and _sha256_of(final) == move.sha256:
        # A run before this one got this far, or the source's own file: the two hosts share the folder.
        if not partial_marker(final, move).exists():
            Move.objects.filter(pk=move.pk).update(archive_shared=True)
        return final
    partial = final.with_name(f".{final.name}.move-{move.pk}")
    digest = hashlib.sha256()
    from backups import archive

    found = False
    try:
        with _transfer_helper(docker, sandbox, move) as helper:
            stream = archive.ChunkReader(docker.read_archive(helper, f"{home_target()}/{move.archive}"))
            with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    if member.name != move.archive or not member.isfile():
                        continue
                    data = tar.extractfile(member)
                    with open(partial, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as out:
                        while chunk := data.read(1 << 20):  # type: ignore[union-attr]
                            digest.update(chunk)
                            out.write(chunk)
                        out.flush()
                        os.fsync(out.fileno())
                    found = True
    except BaseException:  # a stream cut short, a full disk: the move ends; what it wrote goes
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise
    if not found:
        raise MoveError(f"The transfer volume on {move.target.name} does not hold {move.archive}.")
    if digest.hexdigest() != move.sha256:
        partial.unlink(missing_ok=True)
        raise MoveError(
            f"The archive's sha256 on {move.target.name} ({digest.hexdigest()}) is not the one {move.source.name} recorded "
            f"({move.sha256}): it was changed on the way. Nothing was restored."
        )
    if final.exists():
        partial.unlink()
        raise MoveError(f"{final.name} exists on {move.target.name}'s backup folder and is another file; nothing was restored.")
    os.rename(partial, final)
    partial_marker(final, move).touch(mode=0o600)
    return final


def partial_marker(final: Path, move: Move) -> Path:
    """A file beside the archive saying this move's target copied it there itself."""
    return final.with_name(f".{final.name}.moved-{move.pk}")


def _sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _onto_target(move: Move, sandbox: Sandbox) -> Sandbox:
    """Point the row at the target, with no folders, container or quota group recorded yet (a
    run before this one may have left some there: they go first)."""
    if sandbox.host_id == move.target_id:
        _remove_from_target(move, sandbox)
    emptied = {f: "" if f != "host_path_ids" else {} for f in PLACE_FIELDS}
    if not claimed(sandbox, JOB).filter(on_hold=False).update(host=move.target, **emptied):
        if claimed(sandbox, JOB).exists():  # held by an incident declared meanwhile: it stays where its evidence is
            raise MoveError(held_detail(move))
        raise LostClaim()
    return Sandbox.objects.select_related("team", "host").get(pk=sandbox.pk)


def _off_target(move: Move) -> None:
    """A move that failed once its row named the target: what the target made goes (only from
    the target's own machine: anywhere else a folder of that name is not the target's), and the
    row names the source again with what it recorded there (whose data nothing touched)."""
    from hosts.queues import serves

    sandbox = Sandbox.objects.select_related("team", "host").get(pk=move.sandbox_id)
    if sandbox.host_id != move.target_id:
        return
    if serves(move.target.name):
        try:
            _remove_from_target(move, sandbox)
        except Exception:
            log.warning("could not remove what the move of %s left on %s", sandbox.name, move.target.name, exc_info=True)
    else:
        log.warning("the move of %s failed away from %s: what it made there is left", sandbox.name, move.target.name)
    claimed(sandbox, JOB).update(host=move.source, **move.source_state)


def _remove_from_target(move: Move, sandbox: Sandbox) -> None:
    """The target's container, home volume and folders of the sandbox (made by a restore that did
    not finish). Only on the target's own machine, whose workspace root is not the source's."""
    from storage import pool

    docker = engine.engine_for_host(engine.host_of(move.target))
    docker.remove_container_if_ours(sandbox.container_name, labels=engine.ownership_labels(str(sandbox.uuid)))
    docker.remove_volume(sandbox.volume_name, labels=labels(sandbox))
    if sandbox.disk_group and pool.active():
        pool.lift_limit(sandbox.disk_group)
    workspace.workspace_remove(sandbox.name, str(sandbox.uuid))
    if sandbox.disk_group and pool.active():
        pool.destroy_group(sandbox.disk_group)


def _fail(move: Move, detail: str) -> None:
    """The move ends failed: the sandbox stays (or is put back) on its source, as it was."""
    if Move.objects.filter(pk=move.pk, status=Move.Status.RUNNING).exists():
        _off_target(move)
    _ended(move, ok=False, detail=detail)


def _ended(move: Move, *, ok: bool, detail: str) -> None:
    """Record how the move ended, release the sandbox (stopped, where it now is), audit, and
    queue the source's clean-up."""
    with transaction.atomic():
        if not Move.objects.filter(pk=move.pk, status=Move.Status.RUNNING).update(
            status=Move.Status.DONE if ok else Move.Status.FAILED, step=STEP.CLEANUP, detail=detail[:4000], finished_at=timezone.now()
        ):
            return
        sandbox = Sandbox.objects.get(pk=move.sandbox_id)
        details = {"from": move.source.name, "to": move.target.name, "archive": move.archive, "sha256": move.sha256}
        if ok:
            audit(SystemActor("system"), "sandbox.moved", sandbox, details)
        else:
            audit(SystemActor("system"), "sandbox.move_failed", sandbox, {**details, "detail": detail})
        finish(sandbox, JOB, S.STOPPED if ok else None, detail, outcome="done" if ok else "failed", audited=False)
        queue_step(move.pk, STEP.CLEANUP)


def _cleanup(move: Move) -> None:
    """Source, after the move ended: the transfer volumes go; a moved sandbox's container, home
    volume, folders, quota group and archive on the source go too (the target has them now).
    Safe to run again; what cannot be removed is logged and recorded on the move."""
    from backups.services import backup_root
    from hosts.queues import serves
    from storage import pool

    if move.status == Move.Status.RUNNING or not serves(move.source.name):
        return
    sandbox = Sandbox.objects.select_related("team").get(pk=move.sandbox_id)
    view = Sandbox.objects.select_related("team").get(pk=move.sandbox_id)
    view.host = move.source
    for name, value in move.source_state.items():
        setattr(view, name, value)
    left: list[str] = []
    source = engine.engine_for_host(engine.host_of(move.source))
    if not _drop_transfer_volume(source, sandbox):
        left.append(f"the transfer volume {transfer_volume(sandbox)}")
    # The sandbox is gone from the target too when Destroy took it there during the move (its
    # row named the target by then): its copy here has no other owner.
    destroyed = move.status == Move.Status.FAILED and sandbox.host_id != move.source_id and sandbox.status in (S.DESTROYING, S.DESTROYED)
    if move.status == Move.Status.DONE or destroyed:
        try:
            if view.container_id:
                source.remove_container(view.container_id)
            source.remove_container_if_ours(view.container_name, labels=engine.ownership_labels(str(view.uuid)))
            source.remove_volume(view.volume_name, labels=labels(view))
            for name, found in source.instance_volumes(f"{engine.LABEL_UUID}={view.uuid}").items():
                if LABEL_TRANSFER in found:  # a download's staged archive (backups.services.downloads): a copy of its files
                    source.remove_volume(name, labels=labels(view))
            warm.after_recreate(view, source)  # taken from the warm pool: its slot's home volume
            if view.in_pool and pool.active():
                pool.lift_limit(view.disk_group)
            if note := workspace.workspace_remove(view.name, str(view.uuid)):
                left.append(note)
            elif view.in_pool and pool.active():
                pool.destroy_group(view.disk_group)
            if move.archive and not move.archive_shared and not destroyed:  # a destroyed sandbox's backups stay
                (backup_root() / move.archive).unlink(missing_ok=True)
        except (engine.EngineError, workspace.WorkspaceError, pool.PoolError, OSError) as exc:
            left.append(f"the sandbox's old copy on {move.source.name}: {exc}")
    Move.objects.filter(pk=move.pk, step=STEP.CLEANUP).update(
        step=STEP.ENDED, detail=(move.detail + (" Left on the source: " + "; ".join(left) if left else ""))[:4000]
    )
    if left:
        log.warning("the move of %s left: %s", sandbox.name, "; ".join(left))


# --- the transfer volume ---------------------------------------------------------------------------


def transfer_volume(sandbox: Sandbox) -> str:
    """The volume an archive travels in, on each engine: named for the sandbox (its UUID in the
    name, as the policy asks of a helper's volume), never its home."""
    return f"{sandbox.container_name}-move-{sandbox.uuid}"


def _drop_transfer_volume(docker: engine.Engine, sandbox: Sandbox) -> bool:
    try:
        return docker.remove_volume(transfer_volume(sandbox), labels=_transfer_labels(sandbox))
    except engine.EngineError:
        log.warning("could not remove the transfer volume of %s", sandbox.name, exc_info=True)
        return False


def _transfer_labels(sandbox: Sandbox) -> dict[str, str]:
    return {**labels(sandbox), LABEL_TRANSFER: "move"}


def _transfer_helper(docker: engine.Engine, sandbox: Sandbox, move: Move):
    return volume_helper(docker, sandbox, transfer_volume(sandbox), "move")


@contextmanager
def volume_helper(docker: engine.Engine, sandbox: Sandbox, volume: str, purpose: str, *, unique: bool = False) -> Iterator[str]:
    """A helper container (never started) holding only `volume` (made if missing) at
    home_target(), on `docker`'s engine: the backups' helper profile, judged by the policy like
    every helper (one volume, whose name carries the sandbox's UUID; no host folder, no network).
    `purpose` names the helper and labels the volume, so that the helpers of a move and of a
    download never take each other's name; `unique` gives it a name of its own besides (several
    downloads at once: a helper of the same name would be replaced, cutting the other short)."""
    base = helper_spec(sandbox)
    spec = dataclasses.replace(
        base,
        name=f"{sandbox.container_name}-{purpose}" + (f"-{secrets.token_hex(4)}" if unique else ""),
        volumes=(policy.VolumeMount(volume, home_target()),),
        labels={**base.labels, LABEL_TRANSFER: purpose},
    )
    docker.ensure_volume(volume, labels={**labels(sandbox), LABEL_TRANSFER: purpose})
    with docker.helper(spec, rules=policy_rules()) as helper_id:
        yield helper_id


def one_file_tar(path: Path, name: str) -> Iterator[bytes]:
    """A tar stream of one file, `name`, read from `path` a megabyte at a time (the engine's
    archive API takes tar streams only)."""
    with open(path, "rb") as fh:
        info = tarfile.TarInfo(name)
        info.size = os.fstat(fh.fileno()).st_size
        info.mode = 0o600
        info.mtime = int(os.fstat(fh.fileno()).st_mtime)
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        while chunk := fh.read(1 << 20):
            yield chunk
    yield b"\0" * ((-info.size) % tarfile.BLOCKSIZE) + b"\0" * (2 * tarfile.BLOCKSIZE)
