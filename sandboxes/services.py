"""Every write to a sandbox: creation, the lifecycle actions, and reconciling with Docker.

An action has two halves. `sandbox_request_action` (called by a view, the CLI or a test)
authorises, claims the sandbox with a guarded update of `pending_action`, writes the audit
event and enqueues the task on commit. `sandbox_perform` (called by the task) does the Docker
work and records the outcome. `perform` is idempotent: a redelivered task whose work is already
done finds `pending_action` cleared and returns.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_record

from . import engine, live, policy, workspace
from .models import Membership, Mount, Sandbox, Team
from .selectors import has_role

log = logging.getLogger(__name__)
S = Sandbox.Status


class SandboxError(Exception):
    """A request that cannot be carried out now; the message is shown to the user."""


class SystemActor(str):
    """An actor that is not a web user (the CLI, the reconciler); authorised for everything."""


@dataclass(frozen=True)
class Transition:
    allowed_from: frozenset[str]
    result: str
    role: str = Membership.Role.OPERATOR


_ANY_LIVE = frozenset({S.CREATING, S.RUNNING, S.STOPPED, S.PAUSED, S.ERROR})
TRANSITIONS: dict[str, Transition] = {
    "start": Transition(frozenset({S.STOPPED, S.ERROR, S.CREATING}), S.RUNNING),
    "stop": Transition(frozenset({S.RUNNING, S.PAUSED, S.ERROR}), S.STOPPED),
    "restart": Transition(frozenset({S.RUNNING, S.STOPPED, S.ERROR}), S.RUNNING),
    "pause": Transition(frozenset({S.RUNNING}), S.PAUSED),
    "unpause": Transition(frozenset({S.PAUSED}), S.RUNNING),
    "reset": Transition(_ANY_LIVE - {S.CREATING}, S.STOPPED),
    "clean": Transition(_ANY_LIVE - {S.CREATING}, S.STOPPED),
    "destroy": Transition(_ANY_LIVE | {S.DESTROYING}, S.DESTROYED),
}


def _actor_name(actor) -> str:
    return str(actor) if isinstance(actor, SystemActor) else actor.get_username()


def _authorize(actor, team: Team, role: str) -> None:
    if isinstance(actor, SystemActor):
        return
    if not has_role(user=actor, team=team, role=role):
        raise PermissionDenied(f"You need the {role} role in team {team} for this.")


def _audit(actor, action: str, sandbox: Sandbox, details: dict | None = None, source_ip: str | None = None):
    audit_record(
        actor=None if isinstance(actor, SystemActor) else actor,
        actor_name=_actor_name(actor) if actor is not None else "system",
        action=action,
        target=sandbox.name,
        details=details,
        source_ip=source_ip,
    )


def allowed_roots() -> list[str]:
    return [str(settings.WORKSPACE_ROOT), *(str(r) for r in settings.SANDBOX_MOUNT_ROOTS)]


def sandbox_spec(sandbox: Sandbox, extra_mounts: list[Mount] | None = None) -> policy.ContainerSpec:
    """The container spec for `sandbox`, built only from its saved settings."""
    base = sandbox.workspace_path
    mounts = extra_mounts if extra_mounts is not None else list(sandbox.mounts.all())
    binds = [policy.BindMount(str(base / f), f"/workspace/{f}", ro) for f, ro in workspace.FOLDERS.items()]
    binds += [policy.BindMount(m.host_path, m.container_path, m.read_only) for m in mounts]
    return policy.ContainerSpec(
        name=sandbox.container_name,
        image=sandbox.image,
        memory_bytes=sandbox.memory_mb * 1024 * 1024,
        nano_cpus=int(Decimal(sandbox.cpus) * 1_000_000_000),
        pids_limit=sandbox.pids_limit,
        network=settings.SANDBOX_NETWORK if sandbox.network_mode == Sandbox.Network.INTERNET else "none",
        user=f"{settings.SANDBOX_UID}:{settings.SANDBOX_UID}",
        binds=tuple(binds),
        volumes=(policy.VolumeMount(sandbox.volume_name, f"/home/{settings.SANDBOX_USER}"),),
        labels=engine.managed_labels(sandbox.name),
        hostname=sandbox.name,
    )


# --- create ------------------------------------------------------------------------------------

def sandbox_create(
    *,
    actor,
    team: Team,
    name: str,
    image: str,
    memory_mb: int,
    cpus: Decimal,
    network_mode: str,
    extra_mounts: Sequence[tuple[str, str, bool]] = (),
    source_ip: str | None = None,
    enqueue: bool = True,
) -> Sandbox:
    """Record a new sandbox and enqueue its provisioning (folders, volume, container, start).

    The spec is checked against the security policy before anything is saved, so a refused
    sandbox leaves no row, folder or container behind."""
    _authorize(actor, team, Membership.Role.OPERATOR)
    sandbox = Sandbox(
        name=name,
        team=team,
        created_by=None if isinstance(actor, SystemActor) else actor,
        image=image,
        memory_mb=memory_mb,
        cpus=cpus,
        pids_limit=settings.SANDBOX_PIDS_LIMIT,
        network_mode=network_mode,
        status=S.CREATING,
        pending_action="start",
        claimed_at=timezone.now(),
    )
    mounts = [Mount(host_path=h, container_path=c, read_only=ro) for h, c, ro in extra_mounts]
    policy.check(sandbox_spec(sandbox, mounts), allowed_roots=allowed_roots())
    try:
        with transaction.atomic():
            sandbox.save()
            for m in mounts:
                m.sandbox = sandbox
            Mount.objects.bulk_create(mounts)
            _audit(actor, "sandbox.create", sandbox, {
                "image": image, "memory_mb": memory_mb, "cpus": str(cpus), "network": network_mode,
                "mounts": [str(m) for m in mounts],
            }, source_ip)
            if enqueue:  # queued first: on-commit callbacks run in order, and the task is what matters
                _enqueue(sandbox.pk, "start", S.CREATING)
            live.sandbox_changed(sandbox.pk)
    except IntegrityError as exc:
        raise SandboxError(f"A sandbox named {name!r} already exists.") from exc
    return sandbox


def _enqueue(sandbox_id: int, action: str, previous_status: str) -> None:
    """Queue the task once the claim is committed. If the queue (Redis) cannot take it, release
    the claim with the reason instead of leaving the sandbox "in progress" forever."""
    from .tasks import sandbox_action_task  # tasks import services; import here to avoid a cycle

    def send():
        try:
            sandbox_action_task.delay(sandbox_id, action)
        except Exception as exc:  # noqa: BLE001 - kombu raises several types for "broker down"
            log.warning("could not queue %s for sandbox %s: %s", action, sandbox_id, exc)
            sandbox = Sandbox.objects.filter(pk=sandbox_id).first()
            if sandbox is not None:
                status = S.ERROR if previous_status in (S.CREATING, S.DESTROYING) else previous_status
                _finish(sandbox, action, status,
                        f"{action} was not started: the task queue (Redis) is not reachable. Retry when it is back.")

    transaction.on_commit(send)


# --- actions: the request half ---------------------------------------------------------------

def sandbox_request_action(
    *, actor, sandbox: Sandbox, action: str, source_ip: str | None = None, enqueue: bool = True
) -> None:
    """Claim `sandbox` for `action` and enqueue it; raise SandboxError if it cannot run now."""
    transition = TRANSITIONS.get(action)
    if transition is None:
        raise SandboxError(f"Unknown action {action!r}.")
    _authorize(actor, sandbox.team, transition.role)
    changes = {"pending_action": action, "claimed_at": timezone.now()}
    if action == "destroy":
        changes["status"] = S.DESTROYING
    with transaction.atomic():
        claimed = Sandbox.objects.filter(
            pk=sandbox.pk, pending_action="", status__in=transition.allowed_from
        ).update(**changes)
        if not claimed:
            current = Sandbox.objects.filter(pk=sandbox.pk).values("status", "pending_action").first()
            if current is None:
                raise SandboxError("That sandbox no longer exists.")
            if current["pending_action"]:
                raise SandboxError(f"{sandbox.name} is busy ({current['pending_action']} in progress); try again shortly.")
            raise SandboxError(f"Cannot {action} {sandbox.name} while it is {current['status']}.")
        _audit(actor, f"sandbox.{action}", sandbox, {"from": sandbox.status}, source_ip)
        if enqueue:
            _enqueue(sandbox.pk, action, sandbox.status)
        live.sandbox_changed(sandbox.pk)


# --- actions: the Docker half ----------------------------------------------------------------

def _claimed(sandbox: Sandbox, action: str):
    return Sandbox.objects.filter(pk=sandbox.pk, pending_action=action)


def _ensure_container(sandbox: Sandbox, action: str) -> engine.ContainerState | None:
    """Make sure the sandbox has a container, creating folders, volume, network and container
    if needed. Returns the existing container's state, or None for a container just created."""
    if sandbox.container_id:
        state = engine.container_state(sandbox.container_id)
        if state is not None:
            return state
    spec = sandbox_spec(sandbox)
    policy.check(spec, allowed_roots=allowed_roots())
    workspace.workspace_prepare(sandbox.name)
    engine.ensure_volume(sandbox.volume_name, labels=engine.managed_labels(sandbox.name))
    if spec.network != "none":
        engine.ensure_network(spec.network, subnet=settings.SANDBOX_SUBNET, bridge=settings.SANDBOX_BRIDGE)
    try:
        container_id = engine.create_container(spec, allowed_roots=allowed_roots())
    except engine.Conflict:
        # A container of ours with this name but not recorded (a worker died between create
        # and save): it holds no data (the folders and the home volume do), so replace it.
        if not _remove_leftover(sandbox):
            raise engine.EngineError(f"A container named {sandbox.container_name} exists that this panel did not "
                                     "create; rename or remove it, then retry.") from None
        container_id = engine.create_container(spec, allowed_roots=allowed_roots())
    _claimed(sandbox, action).update(container_id=container_id)
    sandbox.container_id = container_id
    return None


def _remove_leftover(sandbox: Sandbox) -> bool:
    """Remove a container of ours holding the sandbox's name; False if the name is someone else's."""
    return engine.remove_container_if_ours(sandbox.container_name, labels=engine.managed_labels(sandbox.name))


def _run_start(sandbox: Sandbox, action: str) -> None:
    state = _ensure_container(sandbox, action)
    if state and state.status == "paused":
        engine.unpause(sandbox.container_id)
    elif not state or state.status != "running":
        engine.start(sandbox.container_id)


def _run_stop(sandbox: Sandbox, action: str) -> None:
    state = engine.container_state(sandbox.container_id) if sandbox.container_id else None
    if state and state.status in ("running", "paused", "restarting"):
        engine.stop(sandbox.container_id, timeout=settings.SANDBOX_STOP_TIMEOUT)


def _run_restart(sandbox: Sandbox, action: str) -> None:
    _ensure_container(sandbox, action)
    engine.restart(sandbox.container_id, timeout=settings.SANDBOX_STOP_TIMEOUT)


def _run_pause(sandbox: Sandbox, action: str) -> None:
    engine.pause(sandbox.container_id)


def _run_unpause(sandbox: Sandbox, action: str) -> None:
    engine.unpause(sandbox.container_id)


def _run_reset(sandbox: Sandbox, action: str) -> None:
    if sandbox.container_id:
        engine.remove_container(sandbox.container_id)
    _remove_leftover(sandbox)
    _claimed(sandbox, action).update(container_id="")


def _run_clean(sandbox: Sandbox, action: str) -> None:
    _run_reset(sandbox, action)
    engine.remove_images(sandbox_name=sandbox.name)


def _run_destroy(sandbox: Sandbox, action: str) -> None:
    _run_clean(sandbox, action)
    engine.remove_volume(sandbox.volume_name, labels=engine.managed_labels(sandbox.name))
    workspace.workspace_remove(sandbox.name)


RUNNERS = {
    "start": _run_start, "stop": _run_stop, "restart": _run_restart, "pause": _run_pause,
    "unpause": _run_unpause, "reset": _run_reset, "clean": _run_clean, "destroy": _run_destroy,
}


def sandbox_perform(*, sandbox_id: int, action: str) -> None:
    """Carry out a claimed action against Docker and record how it ended."""
    sandbox = Sandbox.objects.filter(pk=sandbox_id, pending_action=action).first()
    if sandbox is None:
        return  # gone, or already done by an earlier delivery of this task
    try:
        RUNNERS[action](sandbox, action)
    except policy.PolicyViolation as exc:
        _finish(sandbox, action, S.ERROR, "Refused by the security policy: " + " ".join(exc.problems))
    except (engine.EngineError, workspace.WorkspaceError, OSError) as exc:
        _finish(sandbox, action, S.ERROR, f"{action} failed: {exc}")
    else:
        _finish(sandbox, action, TRANSITIONS[action].result, "")


def _finish(sandbox: Sandbox, action: str, status: str, detail: str) -> None:
    with transaction.atomic():
        done = _claimed(sandbox, action).update(status=status, pending_action="", status_detail=detail)
        if done:
            outcome = "failed" if detail else "done"  # a detail is only ever the reason it failed
            _audit(SystemActor("system"), f"sandbox.{action}.{outcome}", sandbox, {"status": status, "detail": detail})
            live.sandbox_changed(sandbox.pk)
    if detail:
        log.warning("%s %s: %s", action, sandbox.name, detail)


# --- keeping state true ------------------------------------------------------------------------

def _observed_status(sandbox: Sandbox, state: engine.ContainerState | None) -> tuple[str, str] | None:
    """The (status, detail) Docker's view implies, or None when the row is already right."""
    if state is None:
        return S.STOPPED, ("The container was removed outside the panel. Files and the home volume are "
                           "kept; Start creates a new container.")
    if state.status == "running" and sandbox.status != S.RUNNING:
        return S.RUNNING, ""
    if state.status == "paused" and sandbox.status != S.PAUSED:
        return S.PAUSED, ""
    if state.status in ("exited", "dead", "created") and sandbox.status in (S.RUNNING, S.PAUSED):
        if state.oom_killed:
            return S.ERROR, f"Killed: out of memory (limit {sandbox.memory_mb} MB)."
        if state.exit_code:
            return S.ERROR, f"The container exited with code {state.exit_code}."
        return S.STOPPED, "The container exited."
    return None


def sandbox_sync(*, sandbox: Sandbox) -> bool:
    """Bring an idle sandbox's status in line with its container; True if it changed."""
    if sandbox.pending_action or not sandbox.container_id or sandbox.status in (S.DESTROYED, S.DESTROYING):
        return False
    state = engine.container_state(sandbox.container_id)
    observed = _observed_status(sandbox, state)
    if observed is None:
        return False
    status, detail = observed
    with transaction.atomic():
        changed = Sandbox.objects.filter(
            pk=sandbox.pk, pending_action="", status=sandbox.status, container_id=sandbox.container_id
        ).update(status=status, status_detail=detail, container_id=sandbox.container_id if state else "")
        if changed:
            _audit(SystemActor("system"), "sandbox.state_changed", sandbox,
                   {"from": sandbox.status, "to": status, "reason": detail})
            live.sandbox_changed(sandbox.pk)
    return bool(changed)


def sandbox_sync_container(*, container_id: str) -> bool:
    sandbox = Sandbox.objects.filter(container_id=container_id).exclude(status=S.DESTROYED).first()
    return sandbox_sync(sandbox=sandbox) if sandbox else False


def requeue_stale_actions() -> int:
    """Queue again the actions whose task was lost: claimed long ago and still pending.
    Safe because sandbox_perform is idempotent; the claim's clock restarts so it is not
    queued again on every pass."""
    from .tasks import sandbox_action_task

    cutoff = timezone.now() - timedelta(seconds=settings.SANDBOX_STALE_ACTION_SECONDS)
    requeued = 0
    for pk, action in Sandbox.objects.exclude(pending_action="").filter(claimed_at__lt=cutoff).values_list("pk", "pending_action"):
        if Sandbox.objects.filter(pk=pk, pending_action=action, claimed_at__lt=cutoff).update(claimed_at=timezone.now()):
            log.warning("re-queueing %s for sandbox %s: its task never finished", action, pk)
            sandbox_action_task.delay(pk, action)
            requeued += 1
    return requeued


def reconcile_all() -> int:
    """Re-check every idle sandbox against Docker (for events missed while the panel was down).
    Returns how many sandboxes changed status."""
    changed = 0
    for sandbox in Sandbox.objects.exclude(status__in=[S.DESTROYED, S.DESTROYING]).filter(pending_action=""):
        changed += sandbox_sync(sandbox=sandbox)
    return changed
