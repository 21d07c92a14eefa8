"""Every write to a sandbox: creation, the lifecycle actions, and reconciling with Docker.

An action has two halves. `sandbox_request_action` (called by a view, the CLI or a test)
authorises, claims the sandbox with a guarded update of `pending_action`, writes the audit
event and enqueues the task on commit. `sandbox_perform` (called by the task) takes the run
(one worker at a time, with a heartbeat), does the Docker work and records the outcome. It is
idempotent: a redelivered task whose work is done, or that another live worker is doing, returns.

Every start (create, start, restart, recreate) judges the sandbox's host folders as they are on
disk at that moment (policy.check), because Docker resolves bind sources again at every start.
"""

import logging
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.services import audit_record
from controlpanel.db import serialise
from teams.models import Membership, Team
from teams.permissions import SystemActor, actor_name, actor_user, authorize, role_allows

from . import engine, live, policy, workspace
from .models import Mount, Sandbox

log = logging.getLogger(__name__)
S = Sandbox.Status
R = Membership.Role


class SandboxError(Exception):
    """A request that cannot be carried out now; the message is shown to the user."""


class InvalidInput(SandboxError):
    """Input the rules refuse; `errors` maps a field name ("" for the whole form) to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__(" ".join(m for msgs in errors.values() for m in msgs))


class LostClaim(Exception):
    """The action's claim was taken over (by Destroy) while it ran: stop, and undo what it made."""


def _audit(actor, action: str, sandbox: Sandbox, details: dict | None = None, source_ip: str | None = None):
    audit_record(
        actor=actor_user(actor),
        actor_name=actor_name(actor),
        action=action,
        target=sandbox.name,
        sandbox_uuid=sandbox.uuid,
        team_id=sandbox.team_id,
        details=details,
        source_ip=source_ip,
    )


def policy_rules() -> policy.Rules:
    """The installation's policy, from settings."""
    return policy.Rules(
        workspace_root=str(settings.WORKSPACE_ROOT),
        mount_roots=tuple(str(r) for r in settings.SANDBOX_MOUNT_ROOTS),
        networks=(settings.SANDBOX_NETWORK,),
        runtimes=tuple(settings.SANDBOX_RUNTIMES),
    )


def _identity(sandbox: Sandbox, path: str) -> tuple[int, int] | None:
    found = (sandbox.host_path_ids or {}).get(path)
    return (int(found[0]), int(found[1])) if found else None


def sandbox_spec(sandbox: Sandbox, extra_mounts: list[Mount] | None = None) -> policy.ContainerSpec:
    """The container spec for `sandbox`, built only from its saved settings."""
    base = sandbox.workspace_path
    mounts = extra_mounts if extra_mounts is not None else list(sandbox.mounts.all())
    binds = [policy.BindMount(str(base / f), f"/workspace/{f}", ro, _identity(sandbox, str(base / f)), workspace=True)
             for f, ro in workspace.FOLDERS.items()]
    binds += [policy.BindMount(m.host_path, m.container_path, m.read_only, _identity(sandbox, m.host_path))
              for m in mounts]
    return policy.ContainerSpec(
        name=sandbox.container_name,
        image=sandbox.image,
        memory_bytes=sandbox.memory_mb * 1024 * 1024,
        nano_cpus=int(Decimal(sandbox.cpus) * 1_000_000_000),
        pids_limit=sandbox.pids_limit,
        network=settings.SANDBOX_NETWORK if sandbox.network_mode == Sandbox.Network.INTERNET else "none",
        user=f"{settings.SANDBOX_UID}:{settings.SANDBOX_GID}",
        binds=tuple(binds),
        volumes=(policy.VolumeMount(sandbox.volume_name, f"/home/{settings.SANDBOX_USER}"),),
        labels=_labels(sandbox),
        hostname=sandbox.name,
    )


def _labels(sandbox: Sandbox) -> dict[str, str]:
    return engine.managed_labels(sandbox.name, str(sandbox.uuid))


# --- create ------------------------------------------------------------------------------------

def validate_settings(*, name, image, memory_mb, cpus, network_mode) -> dict[str, list[str]]:
    """The rules for a new sandbox's settings, the same for the form, the CLI and any caller."""
    errors: dict[str, list[str]] = {}

    def add(field_name: str, message: str) -> None:
        errors.setdefault(field_name, []).append(message)

    for problem in policy.check_name(name):
        add("name", problem)
    for problem in policy.check_image_ref(image):
        add("image", problem)
    if not isinstance(memory_mb, int) or isinstance(memory_mb, bool):
        add("memory_mb", "Memory: a whole number of MB.")
    elif memory_mb < settings.SANDBOX_MIN_MEMORY_MB:
        add("memory_mb", f"Memory: at least {settings.SANDBOX_MIN_MEMORY_MB} MB.")
    elif memory_mb > settings.SANDBOX_MAX_MEMORY_MB:
        add("memory_mb", f"Memory: at most {settings.SANDBOX_MAX_MEMORY_MB} MB (the panel's limit, SANDBOX_MAX_MEMORY_MB).")
    try:
        cpus_value = Decimal(str(cpus))
        if not cpus_value.is_finite():
            raise InvalidOperation
    except (InvalidOperation, ValueError, TypeError):
        add("cpus", "CPUs: a number such as 1 or 2.5.")
    else:
        most = Decimal(str(settings.SANDBOX_MAX_CPUS))
        if cpus_value < Decimal("0.25"):
            add("cpus", "CPUs: at least 0.25.")
        elif cpus_value > most:
            add("cpus", f"CPUs: at most {most:g} (the CPUs this machine has, or SANDBOX_MAX_CPUS).")
        elif cpus_value != cpus_value.quantize(Decimal("0.01")):
            add("cpus", "CPUs: at most two decimal places.")
    if network_mode not in Sandbox.Network.values:
        add("network_mode", f"Network: one of {', '.join(Sandbox.Network.values)}.")
    if not errors.get("image"):
        try:
            if not engine.image_exists(image):
                add("image", f"Image {image} is not on this machine; build or pull it first.")
        except engine.EngineUnavailable:
            pass  # recorded anyway: its start fails with the reason, and Start retries
    return errors


def _extra_mount_identities(extra_mounts: Sequence[tuple[str, str, bool]], rules: policy.Rules) -> tuple[dict, list[str]]:
    """Judge each extra mount's source on disk now; return ({path: identity}, problems)."""
    identities, problems = {}, []
    for host, _target, _ro in extra_mounts:
        lexical = policy.check_extra_source_lexically(host, rules)
        if lexical:
            problems += lexical
            continue
        try:
            identities[host] = policy.dir_identity(host)
        except policy.HostPathError as exc:
            problems.append(f"Mount source {host} cannot be mounted: {exc}")
    return identities, problems


def _overlapping_mounts(extra_mounts: Sequence[tuple[str, str, bool]]) -> list[str]:
    """Extra mounts that overlap one already mounted by a live sandbox, either side writable.
    Called with the `mounts` lock held, so that two creates cannot both pass."""
    problems = []
    live_mounts = Mount.objects.exclude(sandbox__status=S.DESTROYED).select_related("sandbox")
    for host, _target, read_only in extra_mounts:
        for other in live_mounts:
            if policy.overlaps(host, other.host_path) and not (read_only and other.read_only):
                problems.append(f"Mount source {host} overlaps {other.host_path}, which sandbox {other.sandbox.name} "
                                "mounts; two sandboxes may share a folder only if both mount it read-only.")
    return problems


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

    Every rule is checked here, whoever calls (form, CLI, script), before anything is saved, so
    a refused sandbox leaves no row, folder or container behind: InvalidInput or
    PolicyViolation says why."""
    authorize(actor, team, R.OPERATOR)
    name = name.strip() if isinstance(name, str) else name
    errors = validate_settings(name=name, image=image, memory_mb=memory_mb, cpus=cpus, network_mode=network_mode)
    if errors:
        raise InvalidInput(errors)
    base = settings.WORKSPACE_ROOT / name
    if base.exists() or base.is_symlink():
        raise InvalidInput({"name": [f"{base} already exists (left by an earlier sandbox of this name?). A new sandbox "
                                     "never adopts it: move it away or pick another name."]})
    rules = policy_rules()
    identities, problems = _extra_mount_identities(extra_mounts, rules)
    sandbox = Sandbox(
        name=name, team=team, created_by=actor_user(actor), image=image,
        memory_mb=memory_mb, cpus=Decimal(str(cpus)), pids_limit=settings.SANDBOX_PIDS_LIMIT, network_mode=network_mode,
        status=S.CREATING, pending_action="start", claimed_at=timezone.now(), uuid=uuidlib.uuid4(),
        host_path_ids={p: list(i) for p, i in identities.items()},
    )
    mounts = [Mount(host_path=h, container_path=c, read_only=ro) for h, c, ro in extra_mounts]
    spec = sandbox_spec(sandbox, mounts)
    problems += policy.check_config(spec, rules)
    if problems:
        raise policy.PolicyViolation(list(dict.fromkeys(problems)))
    try:
        with transaction.atomic():
            serialise("sandbox-mounts")
            if Sandbox.objects.exclude(status=S.DESTROYED).filter(name=name).exists():
                raise InvalidInput({"name": [f"A sandbox named {name!r} already exists."]})
            if problems := _overlapping_mounts(extra_mounts):
                raise policy.PolicyViolation(problems)
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
        raise InvalidInput({"name": [f"A sandbox named {name!r} already exists."]}) from exc
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
                finish(sandbox, action, status,
                       f"{action} was not started: the task queue (Redis) is not reachable. Retry when it is back.")

    transaction.on_commit(send)


# --- actions: one table --------------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    """One lifecycle action: the statuses it may start from, the status it ends in, the role it
    needs, and what it does. `preempts`: it may take over a sandbox busy with another action
    (Destroy must always be possible, even while a task is stuck)."""

    allowed_from: frozenset[str]
    result: str
    run: Callable[[Sandbox, str], None] = field(compare=False)
    role: str = R.OPERATOR
    preempts: bool = False


def _claimed(sandbox: Sandbox, action: str):
    return Sandbox.objects.filter(pk=sandbox.pk, pending_action=action)


def _save_claimed(sandbox: Sandbox, action: str, **changes) -> None:
    """Write `changes` while the claim is still ours; raise LostClaim if Destroy took it over."""
    if not _claimed(sandbox, action).update(**changes):
        raise LostClaim()
    for name, value in changes.items():
        setattr(sandbox, name, value)


def _provision(sandbox: Sandbox, action: str) -> None:
    """The sandbox's folders (first time only, recording their identities), home volume and network."""
    folders = [str(sandbox.workspace_path / f) for f in workspace.FOLDERS]
    if not all(f in (sandbox.host_path_ids or {}) for f in folders):
        ids = workspace.workspace_create(sandbox.name, str(sandbox.uuid))
        _save_claimed(sandbox, action, host_path_ids={**(sandbox.host_path_ids or {}), **{p: list(i) for p, i in ids.items()}})
    engine.ensure_volume(sandbox.volume_name, labels=_labels(sandbox))
    if sandbox.network_mode == Sandbox.Network.INTERNET:
        engine.ensure_network(settings.SANDBOX_NETWORK, subnet=settings.SANDBOX_SUBNET, bridge=settings.SANDBOX_BRIDGE)


def _remove_ours(sandbox: Sandbox) -> None:
    """Remove the container named for the sandbox if it is this sandbox's; refuse if not."""
    if not engine.remove_container_if_ours(sandbox.container_name, labels=_labels(sandbox)):
        raise engine.EngineError(f"A container named {sandbox.container_name} exists that does not belong to this "
                                 "sandbox; the panel never touches it. Rename or remove it, then retry.")


def _run_start(sandbox: Sandbox, action: str) -> None:
    """Start the sandbox, judging its folders on disk right before Docker mounts them. The
    existing container is started only if it still matches the saved settings; otherwise it is
    recreated from them (it holds no data: the folders and the home volume do)."""
    _provision(sandbox, action)
    spec = sandbox_spec(sandbox)
    rules = policy_rules()
    policy.check(spec, rules)
    state = engine.container_state(sandbox.container_id) if sandbox.container_id else None
    if state is not None and not policy.spec_drift(spec, engine.inspect_container(state.id)):
        if state.status == "paused":
            engine.unpause(state.id)
        elif state.status != "running":
            engine.start(state.id)
        return
    if state is not None:
        engine.remove_container(state.id)
    _remove_ours(sandbox)
    container_id = engine.create_container(spec, rules=rules)
    try:
        _save_claimed(sandbox, action, container_id=container_id)
    except LostClaim:
        engine.remove_container(container_id)
        raise
    engine.start(container_id)


def _run_stop(sandbox: Sandbox, action: str) -> None:
    state = engine.container_state(sandbox.container_id) if sandbox.container_id else None
    if state and state.status in ("running", "paused", "restarting"):
        engine.stop(sandbox.container_id, timeout=settings.SANDBOX_STOP_TIMEOUT)


def _run_restart(sandbox: Sandbox, action: str) -> None:
    # Not `docker restart`: that would mount the folders again without the policy looking.
    _run_stop(sandbox, action)
    _run_start(sandbox, action)


def _run_pause(sandbox: Sandbox, action: str) -> None:
    engine.pause(sandbox.container_id)


def _run_unpause(sandbox: Sandbox, action: str) -> None:
    engine.unpause(sandbox.container_id)


def _run_reset(sandbox: Sandbox, action: str) -> None:
    if sandbox.container_id:
        engine.remove_container(sandbox.container_id)
    _remove_ours(sandbox)
    _save_claimed(sandbox, action, container_id="")


def _run_clean(sandbox: Sandbox, action: str) -> None:
    _run_reset(sandbox, action)
    engine.remove_images(sandbox_uuid=str(sandbox.uuid))


def _run_destroy(sandbox: Sandbox, action: str) -> None:
    """Everything goes, whatever is or is not on disk; what is not this sandbox's stays, and the
    outcome says so."""
    if sandbox.container_id:
        engine.remove_container(sandbox.container_id)
    left = []
    if not engine.remove_container_if_ours(sandbox.container_name, labels=_labels(sandbox)):
        left.append(f"container {sandbox.container_name} is not this sandbox's; left in place")
    engine.remove_images(sandbox_uuid=str(sandbox.uuid))
    engine.remove_volume(sandbox.volume_name, labels=_labels(sandbox))
    if note := workspace.workspace_remove(sandbox.name, str(sandbox.uuid)):
        left.append(note)
    _save_claimed(sandbox, action, container_id="", status_detail="; ".join(left))


_LIVE = frozenset({S.CREATING, S.RUNNING, S.STOPPED, S.PAUSED, S.ERROR})
ACTIONS: dict[str, Action] = {
    "start": Action(frozenset({S.STOPPED, S.ERROR, S.CREATING}), S.RUNNING, _run_start),
    "stop": Action(frozenset({S.RUNNING, S.PAUSED, S.ERROR}), S.STOPPED, _run_stop),
    "restart": Action(frozenset({S.RUNNING, S.ERROR}), S.RUNNING, _run_restart),
    "pause": Action(frozenset({S.RUNNING}), S.PAUSED, _run_pause),
    "unpause": Action(frozenset({S.PAUSED}), S.RUNNING, _run_unpause),
    "reset": Action(_LIVE - {S.CREATING}, S.STOPPED, _run_reset),
    "clean": Action(_LIVE - {S.CREATING}, S.STOPPED, _run_clean),
    "destroy": Action(_LIVE | {S.DESTROYING}, S.DESTROYED, _run_destroy, role=R.ADMIN, preempts=True),
}


def allowed_actions(sandbox: Sandbox, *, role: str | None) -> list[str]:
    """The actions `sandbox_request_action` would accept now from someone with `role`."""
    return [name for name, a in ACTIONS.items()
            if sandbox.status in a.allowed_from and role_allows(role, a.role)
            and (not sandbox.pending_action or (a.preempts and sandbox.pending_action != name))]


# --- actions: the request half ---------------------------------------------------------------

def sandbox_request_action(
    *, actor, sandbox: Sandbox, action: str, source_ip: str | None = None, enqueue: bool = True
) -> None:
    """Claim `sandbox` for `action` and enqueue it; raise SandboxError if it cannot run now."""
    spec = ACTIONS.get(action)
    if spec is None:
        raise SandboxError(f"Unknown action {action!r}.")
    authorize(actor, sandbox.team, spec.role)
    changes = {"pending_action": action, "claimed_at": timezone.now(), "heartbeat_at": None, "attempts": 0}
    if action == "destroy":
        changes["status"] = S.DESTROYING
    with transaction.atomic():
        claim = Sandbox.objects.filter(pk=sandbox.pk, status__in=spec.allowed_from)
        claim = claim.exclude(pending_action=action) if spec.preempts else claim.filter(pending_action="")
        before = claim.values("status", "pending_action").first()
        if before is None or not claim.update(**changes):
            current = Sandbox.objects.filter(pk=sandbox.pk).values("status", "pending_action").first()
            if current is None:
                raise SandboxError("That sandbox no longer exists.")
            if current["pending_action"]:
                raise SandboxError(f"{sandbox.name} is busy ({current['pending_action']} in progress); try again shortly.")
            raise SandboxError(f"Cannot {action} {sandbox.name} while it is {current['status']}.")
        details = {"from": before["status"]}
        if before["pending_action"]:
            details["interrupted"] = before["pending_action"]
        _audit(actor, f"sandbox.{action}", sandbox, details, source_ip)
        if enqueue:
            _enqueue(sandbox.pk, action, before["status"])
        live.sandbox_changed(sandbox.pk)


# --- actions: the Docker half ----------------------------------------------------------------

@contextmanager
def _heartbeat(sandbox_id: int, action: str) -> Iterator[None]:
    """While the body runs, write `heartbeat_at` every few seconds from a thread: a claim whose
    heartbeat stops has lost its worker (see requeue_stale_actions)."""
    stop = threading.Event()

    def beat():
        try:
            while not stop.wait(settings.SANDBOX_HEARTBEAT_SECONDS):
                if not Sandbox.objects.filter(pk=sandbox_id, pending_action=action).update(heartbeat_at=timezone.now()):
                    return
        except Exception:  # noqa: BLE001 - a missed heartbeat must never fail the action
            log.warning("heartbeat for sandbox %s stopped", sandbox_id, exc_info=True)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{sandbox_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)


def _take_run(sandbox_id: int, action: str) -> Sandbox | None:
    """Take the run of a claimed action: only when nobody runs it, or its runner's heartbeat has
    stopped. Returns the sandbox, or None (done already, or a live worker is on it)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.SANDBOX_STALE_SECONDS)
    taken = Sandbox.objects.filter(pk=sandbox_id, pending_action=action).filter(
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale)
    ).update(heartbeat_at=now, attempts=F("attempts") + 1)
    return Sandbox.objects.select_related("team").filter(pk=sandbox_id, pending_action=action).first() if taken else None


def sandbox_perform(*, sandbox_id: int, action: str) -> None:
    """Carry out a claimed action against Docker and record how it ended. Every way it can end
    is recorded: done, refused by the policy, failed with the reason, or given up after
    SANDBOX_MAX_ATTEMPTS runs whose worker died."""
    sandbox = _take_run(sandbox_id, action)
    if sandbox is None:
        return
    if sandbox.attempts > settings.SANDBOX_MAX_ATTEMPTS:
        finish(sandbox, action, S.ERROR, f"{action} was given up after {settings.SANDBOX_MAX_ATTEMPTS} attempts: "
                                         "its worker stopped each time before it finished.")
        return
    with _heartbeat(sandbox.pk, action):
        try:
            ACTIONS[action].run(sandbox, action)
        except LostClaim:
            _undo_after_lost_claim(sandbox, action)
        except policy.PolicyViolation as exc:
            finish(sandbox, action, S.ERROR, "Refused by the security policy: " + " ".join(exc.problems), outcome="refused")
        except (engine.EngineError, workspace.WorkspaceError, OSError) as exc:
            finish(sandbox, action, S.ERROR, f"{action} failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - an action always ends; the log has the traceback
            log.exception("%s of sandbox %s failed unexpectedly", action, sandbox.name)
            finish(sandbox, action, S.ERROR, f"{action} failed unexpectedly ({type(exc).__name__}: {exc}); see the worker's log.")
        else:
            finish(sandbox, action, ACTIONS[action].result, sandbox.status_detail if action == "destroy" else "", outcome="done")


def _undo_after_lost_claim(sandbox: Sandbox, action: str) -> None:
    """Destroy took the sandbox over while `action` ran: make sure nothing this run made (a
    container, the folder, the volume) outlives it. Destroy's own run removes the rest."""
    log.warning("%s of sandbox %s was interrupted by %s", action, sandbox.name,
                Sandbox.objects.filter(pk=sandbox.pk).values_list("pending_action", flat=True).first())
    try:
        engine.remove_container_if_ours(sandbox.container_name, labels=_labels(sandbox))
        if Sandbox.objects.filter(pk=sandbox.pk, status__in=[S.DESTROYING, S.DESTROYED]).exists():
            engine.remove_volume(sandbox.volume_name, labels=_labels(sandbox))
            workspace.workspace_remove(sandbox.name, str(sandbox.uuid))
    except (engine.EngineError, workspace.WorkspaceError, OSError):
        log.warning("could not undo the interrupted %s of %s", action, sandbox.name, exc_info=True)


def finish(sandbox: Sandbox, action: str, status: str, detail: str, *, outcome: str = "failed") -> bool:
    """Release `action`'s claim on `sandbox` with its outcome ("done", "failed" or "refused", as
    the audit event says); False if the claim was no longer this action's."""
    with transaction.atomic():
        done = _claimed(sandbox, action).update(status=status, pending_action="", status_detail=detail, heartbeat_at=None)
        if done:
            _audit(SystemActor("system"), f"sandbox.{action}.{outcome}", sandbox, {"status": status, "detail": detail})
            live.sandbox_changed(sandbox.pk)
    if detail and outcome != "done":
        log.warning("%s %s: %s", action, sandbox.name, detail)
    return bool(done)


# --- reading a sandbox back ---------------------------------------------------------------------

def hardening_report(sandbox: Sandbox) -> list[tuple[str, bool, str]]:
    """The policy read back from Docker and the kernel for the container that runs as this
    sandbox: its recorded container, or any other that carries its name or identity (one made
    by hand outside the panel is reported, and flagged). Empty when no container exists."""
    claiming = engine.containers_claiming(name=sandbox.container_name, sandbox_uuid=str(sandbox.uuid))
    if not claiming:
        return []
    inspected = {cid: engine.inspect_container(cid) for cid in claiming}
    # Report on what runs (a stranger that runs matters more than the panel's stopped container).
    order = sorted(claiming, key=lambda cid: (not inspected[cid]["State"].get("Running"), cid != sandbox.container_id))
    shown = order[0]
    data = inspected[shown]
    processes = engine.process_privileges(shown) if data["State"].get("Running") else None
    strangers = [cid[:12] for cid in claiming if cid != sandbox.container_id]
    report = [("Only the panel's own container claims this sandbox", not strangers,
               f"also {', '.join(strangers)}" if strangers else (sandbox.container_id or "")[:12])]
    return report + policy.inspect_report(data, sandbox_spec(sandbox), processes)


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
    """Queue again the actions whose worker is gone: never started within SANDBOX_STALE_SECONDS
    of being claimed (the task was lost, say Redis restarted), or whose runner's heartbeat
    stopped (the worker died). A run is taken by one worker at a time (see _take_run), so a
    duplicate is harmless; after SANDBOX_MAX_ATTEMPTS dead runs the action ends in `error`."""
    from .tasks import sandbox_action_task

    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.SANDBOX_STALE_SECONDS)
    stale = Sandbox.objects.exclude(pending_action="").filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, claimed_at__lt=cutoff)
    )
    requeued = 0
    for sandbox in stale:
        action = sandbox.pending_action
        if sandbox.heartbeat_at is not None and sandbox.attempts >= settings.SANDBOX_MAX_ATTEMPTS:
            finish(sandbox, action, S.ERROR, f"{action} was given up after {sandbox.attempts} attempts: its worker "
                                             "stopped each time before it finished.")
            continue
        guard = Q(heartbeat_at=sandbox.heartbeat_at) if sandbox.heartbeat_at else Q(heartbeat_at__isnull=True)
        if _claimed(sandbox, action).filter(guard, claimed_at=sandbox.claimed_at).update(claimed_at=now):
            log.warning("re-queueing %s for sandbox %s: its worker is gone", action, sandbox.name)
            sandbox_action_task.delay(sandbox.pk, action)
            requeued += 1
    return requeued


def remove_orphans() -> int:
    """Remove containers of this instance that belong to a destroyed sandbox (left by a run that
    Destroy interrupted, or by a Docker that was down). Containers whose UUID the panel does not
    know are left alone."""
    destroyed = {str(u) for u in Sandbox.objects.filter(status=S.DESTROYED).values_list("uuid", flat=True)}
    removed = 0
    for state in engine.instance_containers():
        if state.labels.get(engine.LABEL_UUID) in destroyed:
            engine.remove_container(state.id)
            removed += 1
    return removed


def reconcile_all() -> int:
    """Re-check every idle sandbox against Docker (for events missed while the panel was down).
    Returns how many sandboxes changed status."""
    changed = 0
    for sandbox in Sandbox.objects.exclude(status__in=[S.DESTROYED, S.DESTROYING]).filter(pending_action=""):
        changed += sandbox_sync(sandbox=sandbox)
    return changed

