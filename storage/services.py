"""Writes on the storage pool: a sandbox's quota, its checkpoints and rollback, the read-only
snapshots that backups and incidents read, and what Destroy removes.

A checkpoint or rollback is short (milliseconds, and for a rollback the recreation of the
container), so it runs in the request that asks for it, holding the sandbox's claim only for
that long: nothing else changes the sandbox meanwhile, and a process that dies half-way leaves a
claim that the periodic resync releases (`resume`).
"""

import logging
import os
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlpanel.db import serialise
from controlpanel.names import bidi_problem
from controlpanel.retention import beyond_keeping
from sandboxes import engine, live, policy, workspace
from sandboxes.models import Sandbox
from sandboxes.services.auditing import audit
from sandboxes.services.claims import claim, claimed
from sandboxes.services.errors import SandboxError
from sandboxes.services.hosting import folders_problem
from teams import policy as team_policy
from teams.permissions import Role, SystemActor, actor_name, actor_user, authorize

from . import pool
from .models import Checkpoint

log = logging.getLogger(__name__)
S = Sandbox.Status
J = Sandbox.Job
# A checkpoint can be taken of a sandbox in any settled state; a rollback also from `error`.
CHECKPOINT_FROM = frozenset({S.RUNNING, S.STOPPED, S.PAUSED, S.ERROR})


class StorageError(SandboxError):
    """A storage request that cannot be carried out; the message is shown to the user."""


def _checkpoints_dir(sandbox: Sandbox) -> Path:
    return settings.WORKSPACE_ROOT / pool.CHECKPOINTS / str(sandbox.uuid)


def checkpoint_path(checkpoint: Checkpoint) -> Path:
    return _checkpoints_dir(checkpoint.sandbox) / checkpoint.snapshot


def _require_pool(sandbox: Sandbox) -> None:
    if problem := folders_problem(sandbox):  # its host does not answer, or its pool is another machine's
        raise StorageError(problem)
    if not sandbox.in_pool:
        raise StorageError(
            f"{sandbox.name} keeps plain folders, not a subvolume of the storage pool: it has no disk quota, checkpoints or rollback. "
            "`manage.py pool migrate` moves it into the pool."
        )
    if not pool.active():
        raise StorageError("The storage pool is not mounted at the workspace root; `make run` mounts it.")


@contextmanager
def _claimed(sandbox: Sandbox, job: str, *, while_on_hold: bool = False, shown: bool = True) -> Iterator[str]:
    """Hold `job`'s claim on the sandbox for the block; yields the status from before. `shown`:
    tell the pages (a checkpoint's few milliseconds are not worth two live updates)."""
    with transaction.atomic():
        before = claim(sandbox=sandbox, action=job, allowed_from=CHECKPOINT_FROM, while_on_hold=while_on_hold)
    if shown:
        live.sandbox_changed(sandbox)
    try:
        yield before["status"]
    finally:
        claimed(sandbox, job).update(pending_action="", heartbeat_at=None)
        if shown:
            live.sandbox_changed(sandbox)


@contextmanager
def frozen(sandbox: Sandbox) -> Iterator[None]:
    """The sandbox's processes frozen (cgroup freezer, `docker pause`) for the block, if they
    run: a snapshot taken meanwhile is consistent, no file half-written by a process that kept
    going. A sandbox paused already stays paused."""
    docker = engine.engine_for(sandbox)
    state = docker.container_state(sandbox.container_id) if sandbox.container_id else None
    paused_id = state.id if state is not None and state.status == "running" else ""
    if paused_id:
        docker.pause(paused_id)
    try:
        yield
    finally:
        if paused_id:
            docker.unpause(paused_id)


def limit_now(sandbox: Sandbox) -> int | None:
    """The sandbox's quota as saved now (not as it was when a long job began): what a step
    given headroom puts back."""
    return Sandbox.objects.filter(pk=sandbox.pk).values_list("disk_mb", flat=True).first()


@contextmanager
def room_for(sandbox: Sandbox, extra_bytes: int) -> Iterator[None]:
    """The sandbox's quota raised by `extra_bytes` for the block (a restore: its staging copy and
    the data it replaces are in the sandbox's subvolume at once, so a sandbox more than half
    full could not be restored, nor one its agent kept full on purpose). Only while no process
    of the sandbox runs (paused or removed): nothing of it can use the room."""
    if not (sandbox.in_pool and pool.active()):
        yield
        return
    base = limit_now(sandbox) or settings.SANDBOX_DEFAULT_DISK_MB
    pool.set_limit(sandbox.disk_group, base + extra_bytes // (1024 * 1024) + pool.HEADROOM_MB)
    try:
        yield
    finally:
        pool.set_limit(sandbox.disk_group, limit_now(sandbox) or base)


def snapshot_now(sandbox: Sandbox, dest: Path) -> None:
    """A read-only snapshot of the sandbox's subvolume at `dest`, frozen for that instant."""
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with frozen(sandbox):
        pool.snapshot(sandbox.workspace_path, dest, group=sandbox.disk_group, read_only=True, limit_mb=lambda: limit_now(sandbox))


@contextmanager
def read_only_copy(sandbox: Sandbox, what: str) -> Iterator[Path]:
    """A read-only snapshot of the sandbox (its six folders and home/) for a backup or evidence
    to read at leisure, deleted when the block ends. The caller holds a claim while it is
    taken; reading it needs none. A snapshot left by a process that died is deleted by the next
    one of the same name, or by Destroy."""
    dest = settings.WORKSPACE_ROOT / pool.SNAPSHOTS / f"{sandbox.uuid}-{what}"
    pool.delete(dest, group=sandbox.disk_group, limit_mb=lambda: limit_now(sandbox))
    snapshot_now(sandbox, dest)
    try:
        yield dest
    finally:
        try:
            pool.delete(dest, group=sandbox.disk_group, limit_mb=lambda: limit_now(sandbox))
        except pool.PoolError:
            log.warning("could not delete the snapshot %s", dest, exc_info=True)


def checkpoint_create(*, actor, sandbox: Sandbox, label: str = "", automatic: bool = False, source_ip: str | None = None) -> Checkpoint:
    """Take a checkpoint of the sandbox, running or not (frozen for the instant of the snapshot),
    audited; then those the sandbox's retention no longer keeps are rotated away (`rotate`)."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    label = (label or "").strip()
    if len(label) > 100 or any(ord(c) < 32 for c in label):
        raise StorageError("A checkpoint's label is at most 100 printable characters.")
    if problem := bidi_problem(label, "A checkpoint's label"):
        raise StorageError(problem)
    _require_pool(sandbox)
    with _claimed(sandbox, J.CHECKPOINT, shown=False) as status:
        checkpoint = _take(actor, sandbox, label=label, automatic=automatic, was_running=status == S.RUNNING)
    audit(actor, "sandbox.checkpoint", sandbox, {"checkpoint": checkpoint.snapshot, "label": label}, source_ip)
    rotate(sandbox)
    return checkpoint


def _take(actor, sandbox: Sandbox, *, label: str, automatic: bool, was_running: bool) -> Checkpoint:
    name = f"{timezone.now():%Y%m%d-%H%M%S}-{uuidlib.uuid4().hex[:8]}"
    snapshot_now(sandbox, _checkpoints_dir(sandbox) / name)
    return Checkpoint.objects.create(
        sandbox=sandbox,
        label=label,
        automatic=automatic,
        created_by=actor_user(actor),
        created_by_name=actor_name(actor),
        snapshot=name,
        was_running=was_running,
    )


def _locked(sandbox: Sandbox) -> Any:
    """Inside a transaction: the sandbox's row, locked until the transaction ends (a claim, an
    incident's hold and a second rotation wait meanwhile), with what deleting its checkpoints
    depends on."""
    serialise(f"checkpoints-{sandbox.pk}")  # two rotations at once would delete one snapshot twice
    return (
        Sandbox.objects.select_for_update()
        .filter(pk=sandbox.pk)
        .values("on_hold", "pending_action", "checkpoint_keep_last", "checkpoint_keep_days")
        .first()
    )


def rotate(sandbox: Sandbox, *, keep: frozenset[int] = frozenset()) -> int:
    """Delete the checkpoints the sandbox's retention no longer keeps, by the rule scheduled
    backups are rotated by (controlpanel.retention): its newest `checkpoint_keep_last`
    (SANDBOX_KEEP_CHECKPOINTS when unset; automatic ones, taken before a rollback, counted after
    the others, so they go first) and those younger than `checkpoint_keep_days`; never those in
    `keep` (a rollback's checkpoint of the present, which it has just returned to undo it with).
    Never while an incident holds the sandbox (what it was before the incident is what a reset
    may need), nor while a rollback runs (its target and its checkpoint of the present are in
    use; it rotates when it is done)."""
    removed = 0
    with transaction.atomic():
        current = _locked(sandbox)
        if current is None or current["on_hold"] or current["pending_action"] == J.ROLLBACK:
            return 0
        ranked = sorted(Checkpoint.objects.filter(sandbox=sandbox), key=lambda c: (not c.automatic, c.created_at, c.pk), reverse=True)
        gone = beyond_keeping(
            ranked,
            keep_last=current["checkpoint_keep_last"] or settings.SANDBOX_KEEP_CHECKPOINTS,
            keep_days=current["checkpoint_keep_days"],
            now=timezone.now(),
            taken=_taken,
        )
        for checkpoint in gone:
            if checkpoint.pk in keep:
                continue
            _delete(checkpoint)
            audit(
                SystemActor("rotation"),
                "sandbox.checkpoint_deleted",
                sandbox,
                {"checkpoint": checkpoint.snapshot, "label": checkpoint.label},
            )
            removed += 1
    return removed


def _taken(checkpoint: Checkpoint):
    return checkpoint.created_at


# The bounds of a sandbox's checkpoint retention (as a schedule's keep_last and keep_days).
KEEP_LAST_MAX = 1000
KEEP_DAYS_MAX = 3650


def checkpoint_retention_set(*, actor, sandbox: Sandbox, keep_last: int | None, keep_days: int | None, source_ip: str | None = None) -> int:
    """Set how many checkpoints the sandbox keeps (None: SANDBOX_KEEP_CHECKPOINTS) and for how
    many days (None: no age rule), audited, then rotate by it. Returns how many went."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    if keep_last is not None and not 1 <= keep_last <= KEEP_LAST_MAX:
        raise StorageError(
            f"Keep from 1 to {KEEP_LAST_MAX} checkpoints, or leave it empty for the panel's {settings.SANDBOX_KEEP_CHECKPOINTS}."
        )
    if keep_days is not None and not 1 <= keep_days <= KEEP_DAYS_MAX:
        raise StorageError(f"Keep checkpoints from 1 to {KEEP_DAYS_MAX} days, or leave it empty for no age rule.")
    if problem := folders_problem(sandbox):  # its snapshots are on that machine
        raise StorageError(problem)
    Sandbox.objects.filter(pk=sandbox.pk).update(checkpoint_keep_last=keep_last, checkpoint_keep_days=keep_days)
    sandbox.checkpoint_keep_last, sandbox.checkpoint_keep_days = keep_last, keep_days
    audit(actor, "sandbox.checkpoint_retention", sandbox, {"keep_last": keep_last, "keep_days": keep_days}, source_ip)
    return rotate(sandbox)


def _delete(checkpoint: Checkpoint) -> None:
    sandbox = checkpoint.sandbox
    pool.delete(checkpoint_path(checkpoint), group=sandbox.disk_group, limit_mb=lambda: limit_now(sandbox))
    checkpoint.delete()


def checkpoint_delete(*, actor, checkpoint: Checkpoint, source_ip: str | None = None) -> None:
    sandbox = checkpoint.sandbox
    authorize(actor, sandbox.team, Role.OPERATOR)
    if problem := folders_problem(sandbox):  # the snapshot is on that machine: the row would go, the snapshot stay
        raise StorageError(problem)
    with transaction.atomic():
        current = _locked(sandbox)
        if current is None:
            raise StorageError("That sandbox no longer exists.")
        if current["on_hold"]:
            raise StorageError(
                f"{sandbox.name} is held by an open incident: its checkpoints are what it was before, kept until the incident is closed."
            )
        if current["pending_action"] == J.ROLLBACK:
            raise StorageError(f"{sandbox.name} is being rolled back; delete the checkpoint when the rollback has ended.")
        _delete(checkpoint)
        audit(actor, "sandbox.checkpoint_deleted", sandbox, {"checkpoint": checkpoint.snapshot, "label": checkpoint.label}, source_ip)


def rollback(*, actor, sandbox: Sandbox, checkpoint: Checkpoint, source_ip: str | None = None) -> Checkpoint:
    """Put the sandbox back to `checkpoint`: a checkpoint of the present first, then the
    container removed, the live subvolume replaced by a writable copy of the checkpoint (files
    and home exactly as they were), the folders' identities recorded again, and the container
    recreated from the sandbox's own settings and started if it ran. Returns the checkpoint of
    the present (to undo the rollback)."""
    from sandboxes.services.actions import run_start

    authorize(actor, sandbox.team, Role.OPERATOR)
    _require_pool(sandbox)
    if checkpoint.sandbox_id != sandbox.pk:
        raise StorageError("That checkpoint is not this sandbox's.")
    if not os.path.isdir(checkpoint_path(checkpoint)):
        raise StorageError(f"The checkpoint's snapshot {checkpoint_path(checkpoint)} is missing.")
    with _claimed(sandbox, J.ROLLBACK) as status:
        # Deleted between the check above and the claim (nothing deletes it once the claim is
        # taken): said now, before the container is removed.
        if not Checkpoint.objects.filter(pk=checkpoint.pk).exists() or not os.path.isdir(checkpoint_path(checkpoint)):
            raise StorageError(f"The checkpoint {checkpoint.snapshot} was deleted meanwhile.")
        before = _take(
            SystemActor("rollback"),
            sandbox,
            label=f"before rollback to {checkpoint.snapshot}",
            automatic=True,
            was_running=status == S.RUNNING,
        )
        docker = engine.engine_for(sandbox)
        if sandbox.container_id:
            docker.remove_container(sandbox.container_id)  # its state is being thrown away
        try:
            _swap_in(sandbox, checkpoint)
            if status in (S.RUNNING, S.PAUSED):
                run_start(sandbox, J.ROLLBACK)
                Sandbox.objects.filter(pk=sandbox.pk).update(status=S.RUNNING, status_detail="")
            else:
                Sandbox.objects.filter(pk=sandbox.pk).update(status=S.STOPPED, container_id="", status_detail="")
        except Exception as exc:
            # Its container is gone: never left saying "running". Start makes a new one.
            why = " ".join(exc.problems) if isinstance(exc, policy.PolicyViolation) else str(exc)
            Sandbox.objects.filter(pk=sandbox.pk).update(status=S.ERROR, status_detail=f"The rollback failed: {why}")
            raise StorageError(f"The rollback to {checkpoint.snapshot} failed: {why}") from exc
    audit(
        actor,
        "sandbox.rollback",
        sandbox,
        {"checkpoint": checkpoint.snapshot, "label": checkpoint.label, "before": before.snapshot},
        source_ip,
    )
    rotate(sandbox, keep=frozenset({before.pk}))
    return before


def _swap_in(sandbox: Sandbox, checkpoint: Checkpoint) -> None:
    """Replace the live subvolume by a writable snapshot of the checkpoint. The live one is moved
    aside first and deleted only once the new one is in place: a failure leaves one of them
    under the sandbox's name, never neither."""
    base = sandbox.workspace_path
    aside = settings.WORKSPACE_ROOT / pool.SNAPSHOTS / f"{sandbox.uuid}-replaced-{uuidlib.uuid4().hex[:8]}"
    os.rename(base, aside)
    try:
        pool.snapshot(checkpoint_path(checkpoint), base, group=sandbox.disk_group, read_only=False, limit_mb=lambda: limit_now(sandbox))
    except pool.PoolError:
        os.rename(aside, base)
        raise
    chains = workspace.workspace_create(sandbox.name, str(sandbox.uuid), subvolume=True)
    recorded = {**(sandbox.host_path_ids or {}), **{p: [list(pair) for pair in c] for p, c in chains.items()}}
    claimed(sandbox, J.ROLLBACK).update(host_path_ids=recorded)
    sandbox.host_path_ids = recorded
    try:
        pool.delete(aside, group=sandbox.disk_group, limit_mb=lambda: limit_now(sandbox))
    except pool.PoolError:
        # The rollback is done; what was replaced goes with the next Destroy at the latest.
        log.warning("could not delete %s after the rollback of %s", aside, sandbox.name, exc_info=True)


def set_disk_quota(*, actor, sandbox: Sandbox, disk_mb: int, source_ip: str | None = None) -> None:
    """Change the sandbox's disk quota (effective at once, running or not)."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    if not settings.SANDBOX_MIN_DISK_MB <= int(disk_mb) <= settings.SANDBOX_MAX_DISK_MB:
        raise StorageError(f"A disk quota is from {settings.SANDBOX_MIN_DISK_MB} to {settings.SANDBOX_MAX_DISK_MB} MB.")
    _require_pool(sandbox)
    was = sandbox.disk_mb
    with transaction.atomic():
        try:  # with the team's row locked, as a create is judged
            team_policy.check_change(sandbox=sandbox, disk_mb=int(disk_mb))
        except team_policy.OverLimit as exc:
            raise StorageError(" ".join(p for ps in exc.errors.values() for p in ps)) from exc
        serialise("sandbox-mounts")  # the lock creates hold while they count the pool's quotas
        if int(disk_mb) > (sandbox.disk_mb or 0) and (problem := overcommit_problem(int(disk_mb), exclude=sandbox.pk)):
            raise StorageError(problem)
        pool.set_limit(sandbox.disk_group, int(disk_mb))
        Sandbox.objects.filter(pk=sandbox.pk).update(disk_mb=int(disk_mb))
        sandbox.disk_mb = int(disk_mb)
        audit(actor, "sandbox.disk_quota_changed", sandbox, {"from_mb": was, "to_mb": int(disk_mb)}, source_ip)
    live.sandbox_changed(sandbox)


def overcommit_problem(disk_mb: int, *, exclude: int | None = None) -> str | None:
    """Why a quota of `disk_mb` for one more sandbox (or a raised one, `exclude` being it) would
    overcommit the pool, or None. The quotas of sandboxes in the pool, and of new ones about to
    be placed there, must fit in it with a reserve (5 %, at least 256 MB) for the pool's own
    metadata. Call with the pool-quotas lock held (controlpanel.db.serialise)."""
    if settings.STORAGE_OVERCOMMIT or not pool.active():
        return None
    size_mb = pool.status().get("size", 0) // (1024 * 1024)
    live = Sandbox.objects.exclude(status=S.DESTROYED)
    if exclude is not None:
        live = live.exclude(pk=exclude)
    committed = sum(
        s.disk_mb or settings.SANDBOX_DEFAULT_DISK_MB
        for s in live.only("disk_mb", "disk_group", "host_path_ids")
        if s.disk_group or not s.host_path_ids  # in the pool, or about to be placed there
    )
    room = size_mb - max(256, size_mb // 20) - committed
    if disk_mb <= room:
        return None
    return (
        f"The storage pool holds {size_mb} MB and its sandboxes' quotas already take {committed} MB: "
        f"{max(room, 0)} MB are left for this one's {disk_mb} MB. Give less, grow the pool (manage.py pool grow), "
        "or allow overcommitting (STORAGE_OVERCOMMIT=true)."
    )


def place(sandbox: Sandbox) -> str:
    """At a sandbox's first provisioning: its subvolume's quota group, made and limited (the
    subvolume itself is made by workspace.workspace_create). Returns the group."""
    return pool.ensure_group(sandbox.workspace_path, limit_mb=sandbox.disk_mb or settings.SANDBOX_DEFAULT_DISK_MB)


def forget(sandbox: Sandbox) -> list[str]:
    """Destroy: delete the sandbox's checkpoints and leftover snapshots, and its quota group.
    Returns what could not be removed, in words."""
    left: list[str] = []
    if not pool.active():
        return left
    if sandbox.disk_group:
        pool.lift_limit(sandbox.disk_group)
    folder = _checkpoints_dir(sandbox)
    if folder.is_dir():
        for entry in sorted(os.listdir(folder)):
            try:
                pool.delete(folder / entry)
            except pool.PoolError as exc:
                left.append(f"checkpoint {entry} left: {exc}")
        if not left:
            folder.rmdir()
    Checkpoint.objects.filter(sandbox=sandbox).delete()
    snapshots = settings.WORKSPACE_ROOT / pool.SNAPSHOTS
    for entry in os.listdir(snapshots) if snapshots.is_dir() else ():
        if entry.startswith(f"{sandbox.uuid}-"):
            try:
                pool.delete(snapshots / entry)
            except pool.PoolError as exc:
                left.append(f"snapshot {entry} left: {exc}")
    if sandbox.disk_group and not left:
        pool.destroy_group(sandbox.disk_group)
    elif sandbox.disk_group and sandbox.disk_mb:
        pool.set_limit(sandbox.disk_group, sandbox.disk_mb)  # what is left stays bounded
    return left


def resume(sandbox: Sandbox) -> None:
    """A checkpoint or rollback whose process died: unfreeze the container if it was left
    paused under a running sandbox, and release the claim (its next request starts afresh)."""
    try:
        docker = engine.engine_for(sandbox)
        state = docker.container_state(sandbox.container_id) if sandbox.container_id else None
        if state is not None and state.status == "paused" and sandbox.status == S.RUNNING:
            docker.unpause(state.id)
    except engine.EngineError:
        log.warning("could not check the container of %s", sandbox.name, exc_info=True)
    job = sandbox.pending_action
    claimed(sandbox, job).update(pending_action="", heartbeat_at=None, status_detail=f"The {job} was interrupted (its process stopped).")
    live.sandbox_changed(sandbox)
