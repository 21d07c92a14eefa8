"""The lifecycle actions: one table (the statuses each may start from, the status it ends in,
the role it needs, what it does), the request half that claims and enqueues, and the Docker half
that a task runs.

Every start (create, start, restart, recreate) judges the sandbox's host folders as they are on
disk at that moment (policy.check), because Docker resolves bind sources again at every start.
"""

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction

from hosts.health import unreachable_reason
from hosts.models import Host
from teams.permissions import Role, SystemActor, authorize, role_allows

from .. import engine, live, network, policy, secrets, workspace
from ..models import Sandbox
from ..network import proxy_ca
from . import warm
from .allowlist import grants_repair, sync_grants
from .auditing import audit
from .claims import CANCELLERS, claim, claimed, finish, heartbeat, take_run
from .claims import enqueue as enqueue_task
from .errors import LostClaim, NotQueued, SandboxError
from .rules import policy_rules
from .specs import labels, sandbox_spec

log = logging.getLogger(__name__)
S = Sandbox.Status
A = Sandbox.Action


@dataclass(frozen=True)
class Action:
    """One lifecycle action. `preempts`: it may take over a sandbox busy with another action
    (Destroy must always be possible, even while a task is stuck)."""

    allowed_from: frozenset[str]
    result: str
    run: Callable[[Sandbox, str], None] = field(compare=False)
    role: str = Role.OPERATOR
    preempts: bool = False


def save_claimed(sandbox: Sandbox, action: str, **changes) -> None:
    """Write `changes` while the claim is still ours; raise LostClaim if Destroy took it over."""
    if not claimed(sandbox, action).update(**changes):
        raise LostClaim()
    for name, value in changes.items():
        setattr(sandbox, name, value)


def provision(sandbox: Sandbox, action: str) -> None:
    """The sandbox's folders (first time only, recording their identities), home volume and network."""
    from storage import pool
    from storage import services as storage

    recorded = sandbox.host_path_ids or {}
    folders = [str(sandbox.workspace_path / f) for f in workspace.FOLDERS]
    if sandbox.in_pool:
        folders.append(str(sandbox.home_path))
    if not all(f in recorded for f in folders):
        # A new sandbox goes into the storage pool when there is one; one that has folders
        # already (made before the pool) keeps them until it is migrated.
        into_pool = sandbox.in_pool or (pool.enabled() and not any(f in recorded for f in folders))
        if into_pool and not pool.active():
            # Never plain folders under the pool's mount point: they would keep it from being mounted.
            raise workspace.WorkspaceError(
                "The storage pool is not mounted at the workspace root: `make run` (or `manage.py pool ensure`) mounts it."
            )
        chains = workspace.workspace_create(sandbox.name, str(sandbox.uuid), subvolume=into_pool)
        changes: dict[str, object] = {"host_path_ids": {**recorded, **{p: [list(pair) for pair in c] for p, c in chains.items()}}}
        if into_pool and not sandbox.disk_group:
            changes["disk_group"] = storage.place(sandbox)
            changes["disk_mb"] = sandbox.disk_mb or settings.SANDBOX_DEFAULT_DISK_MB
        save_claimed(sandbox, action, **changes)
    docker = engine.engine_for(sandbox)
    docker.ensure_volume(sandbox.volume_name, labels=labels(sandbox), device=str(sandbox.home_path) if sandbox.in_pool else "")
    network.ensure_network_of(docker, sandbox.network_mode)


def _remove_ours(sandbox: Sandbox) -> None:
    """Remove the container named for the sandbox if it is this sandbox's; refuse if not."""
    if not engine.engine_for(sandbox).remove_container_if_ours(sandbox.container_name, labels=engine.ownership_labels(str(sandbox.uuid))):
        raise engine.EngineError(
            f"A container named {sandbox.container_name} exists that does not belong to this "
            "sandbox; the panel never touches it. Rename or remove it, then retry."
        )


def run_start(sandbox: Sandbox, action: str) -> None:
    """Start the sandbox, judging its folders on disk right before Docker mounts them. The
    existing container is started only if it still matches the saved settings; otherwise it is
    recreated from them (it holds no data: the folders and the home volume do)."""
    if not engine.host_for(sandbox).on_this_machine:  # placed there before placement refused it
        raise policy.PolicyViolation(
            [
                f"{sandbox.name} is on host {sandbox.host.name}, whose engine is on another machine: it would mount that "
                "machine's folders, not the ones the policy judges here, so it does not start there."
            ]
        )
    docker = engine.engine_for(sandbox)
    slot = warm.taken_by(sandbox)
    if slot is not None and warm.claim(sandbox, action, slot, docker):
        return
    with _egress_gate(sandbox, docker) as gate:
        provision(sandbox, action)
        spec = sandbox_spec(sandbox)
        rules = policy_rules()
        policy.check(spec, rules)
        container_id = _started_container(sandbox, action, docker, spec, rules, gate.before_start)
        # Every step after Docker's start runs whichever attempt gets here: a run whose worker died
        # after Docker started the container left it running with none of them done, and nothing
        # records how far it got. Each step is idempotent, so running it again costs only its time.
        confirmed = gate.read_again()
        _verify_mounted(docker, container_id, spec)
        _deliver(sandbox, docker, container_id)
        gate.after_start(container_id, confirmed)
    _grant_listed(sandbox, docker, container_id)


def _started_container(
    sandbox: Sandbox, action: str, docker, spec: policy.ContainerSpec, rules: policy.Rules, gate: Callable[[], None]
) -> str:
    """The sandbox's container, started (or unpaused, or found running) if it still matches the
    saved settings, else made anew from them and started; returns its id. `gate` raises unless
    the container may start (the egress rules): it is passed before anything runs, and before a
    drifted container is removed; a new container is created (never started) meanwhile."""
    found = _inspected(docker, sandbox.container_id)
    if found is not None and not policy.spec_drift(spec, found):
        gate()
        status = found["State"]["Status"]
        if status == "paused":
            docker.unpause(found["Id"])
        elif status != "running":
            docker.start(found["Id"])
        return found["Id"]
    if found is not None:
        gate()
        docker.remove_container(found["Id"])
    _remove_ours(sandbox)
    if sandbox.warm_slot:  # the container taken from the warm pool is gone: made from its own spec now
        warm.after_recreate(sandbox, docker)
        save_claimed(sandbox, action, warm_slot="")
    container_id = docker.create_container(spec, rules=rules)
    try:
        save_claimed(sandbox, action, container_id=container_id)
    except LostClaim:
        docker.remove_container(container_id)
        raise
    gate()
    docker.start(container_id)
    return container_id


@dataclass
class _EgressGate:
    """What a sandbox on a network needs around its start (see _egress_gate). `before_start`
    raises unless Docker may start it; `after_start` raises, and stops the container, unless the
    rules still hold once it runs. `judge` is the reading (network.may_join), `reading` the
    thread it runs in, `early` its result when it was asked from the start of the run."""

    sandbox: Sandbox
    docker: engine.Engine
    judge: Callable[[], network.Decision] | None = None
    reading: ThreadPoolExecutor | None = None
    early: Future | None = None
    passed: bool = False

    def before_start(self) -> None:
        if self.passed or self.judge is None:
            return
        _require_egress_rules(self.sandbox, self.early.result() if self.early else self.judge())
        if self.sandbox.network_mode == Sandbox.Network.ALLOWLIST and network.enforced():
            try:
                sync_grants()  # before the start: no grant of an earlier holder of its address is left
            except network.EgressError as exc:
                raise policy.PolicyViolation([f"The allowlist grants could not be brought in line: {exc}"]) from exc
        self.passed = True

    def read_again(self) -> Future | None:
        """The rules read again, in the thread, while the started container is checked."""
        if self.judge is None or self.reading is None:
            return None
        return self.reading.submit(self.judge)

    def after_start(self, container_id: str, confirmed: Future | None) -> None:
        """The reading before the start may be some hundreds of milliseconds old when Docker
        starts the container (provision, the folders' walk and the create ran meanwhile), and the
        rules can change in between (deleted, a chain put first, a network made): the start is
        reported only if they are in place once the container runs; else it is stopped at once."""
        if confirmed is None:
            return
        try:
            _require_egress_rules(self.sandbox, confirmed.result())
        except BaseException as exc:  # refused, or not read at all (never counted as allowed)
            self.docker.stop(container_id, timeout=0)
            if isinstance(exc, policy.PolicyViolation):
                raise policy.PolicyViolation([*exc.problems, "It had started meanwhile and was stopped."]) from exc
            raise


@contextmanager
def _egress_gate(sandbox: Sandbox, docker) -> Iterator[_EgressGate]:
    """What a sandbox on a network needs before it starts, judged while the start is prepared:
    the gate (network.may_join: the host's egress rules read with iptables-save, ip and ipset,
    some milliseconds of processes) runs in a thread, and the gate this yields waits for its
    decision and fails closed as _require_egress_rules says, then brings an allowlist sandbox's
    grants in line. It is asked from the start of the run when the sandbox's bridge exists
    already, else once provision has made its network (Docker changes the host's rules when it
    makes one): on every start, before Docker starts the container. Because that reading is
    older than the start, it is asked again once the container runs (after_start)."""
    if sandbox.network_mode == Sandbox.Network.NONE:
        yield _EgressGate(sandbox, docker)
        return

    def judge() -> network.Decision:
        return network.may_join(sandbox.network_mode, local_engine=docker.host.is_local, bridge_made=True)

    bridge = network.bridge_of(sandbox.network_mode)
    early = network.enforced() and docker.host.is_local and bridge is not None and network.bridge_present(bridge.bridge)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="egress-gate") as reading:
        yield _EgressGate(sandbox, docker, judge, reading, reading.submit(judge) if early else None)


def _inspected(docker, container_id: str) -> dict | None:
    """`docker inspect` of the sandbox's recorded container, None when there is none: one call
    gives both its state and what spec_drift compares."""
    if not container_id:
        return None
    try:
        return docker.inspect_container(container_id)
    except engine.NotFound:
        return None


def _grant_listed(sandbox: Sandbox, docker, container_id: str) -> None:
    """An allowlist sandbox's listed CIDRs are granted to its new address (its names are granted
    by the resolver as it asks for them); one that cannot have them is stopped, not left
    running without what its list gives it."""
    if sandbox.network_mode == Sandbox.Network.ALLOWLIST and network.enforced():
        try:
            sync_grants()
        except network.EgressError as exc:
            docker.stop(container_id, timeout=settings.SANDBOX_STOP_TIMEOUT)
            raise engine.EngineError(f"its allowlist could not be granted ({exc}); it was stopped") from exc


def _deliver(sandbox: Sandbox, docker, container_id: str) -> None:
    """The file secrets, the SSH key and the git identity; a sandbox that cannot take them is
    stopped rather than left running without what it was given."""
    try:
        secrets.deliver(sandbox, container_id)
        proxy_ca.deliver(docker, container_id, sandbox.network_mode)
    except (engine.EngineError, secrets.VaultError):
        docker.stop(container_id, timeout=settings.SANDBOX_STOP_TIMEOUT)
        raise


def _require_egress_rules(sandbox: Sandbox, decision: network.Decision) -> None:
    """Fail closed: a sandbox on the network starts only when the gate (network.may_join) lets
    it, i.e. the host's egress rules are in place, exactly, and its bridge exists under its name.
    Missing or changed rules are not put back here: that is the periodic check's job, which
    audits what it found."""
    if decision.allowed:
        return
    if decision.problems:
        audit(SystemActor("egress"), "egress.refused_start", sandbox, {"problems": list(decision.problems)})
        raise policy.PolicyViolation(
            [
                f"{decision.reason} The panel repairs them within {settings.SANDBOX_RESYNC_SECONDS:.0f} s "
                "(or run `manage.py egress apply`); start again then."
            ]
        )
    raise policy.PolicyViolation([decision.reason])


def _verify_mounted(docker, container_id: str, spec: policy.ContainerSpec) -> None:
    """After the start, check that Docker mounted the very folders the policy judged: a swap
    that won the race between the check and the mount is caught here, and the container is
    removed before the start is reported. A container that exited at once is said so (and kept,
    with its output)."""
    binds = (*spec.binds, *(v.as_bind() for v in spec.volumes if v.device))  # a pool sandbox's home too
    seen = docker.mounted_identities(container_id, [b.target for b in binds])
    if seen is None:
        state = docker.container_state(container_id)
        if state is not None and state.status in ("exited", "dead"):
            raise engine.EngineError(f"the container exited at once (code {state.exit_code}); its output says why.")
        return  # a remote engine: the checks before the start are what holds
    wrong = [b for b in binds if seen.get(b.target) != b.identity]
    if wrong:
        docker.remove_container(container_id)
        raise policy.PolicyViolation(
            [
                f"Docker mounted another folder than {b.source} at {b.target} (it was swapped during the start); the container was removed."
                for b in wrong
            ]
        )


def run_stop(sandbox: Sandbox, action: str) -> None:
    docker = engine.engine_for(sandbox)
    state = docker.container_state(sandbox.container_id) if sandbox.container_id else None
    if state and state.status in ("running", "paused", "restarting"):
        docker.stop(sandbox.container_id, timeout=settings.SANDBOX_STOP_TIMEOUT)


def run_restart(sandbox: Sandbox, action: str) -> None:
    # Not `docker restart`: that would mount the folders again without the policy looking.
    run_stop(sandbox, action)
    run_start(sandbox, action)


def run_pause(sandbox: Sandbox, action: str) -> None:
    engine.engine_for(sandbox).pause(sandbox.container_id)


def run_unpause(sandbox: Sandbox, action: str) -> None:
    """A paused sandbox resumes on its network: only through the gate a start passes (a Start
    of a paused container unpauses it after the same check)."""
    docker = engine.engine_for(sandbox)
    if sandbox.network_mode != Sandbox.Network.NONE:
        _require_egress_rules(sandbox, network.may_join(sandbox.network_mode, local_engine=docker.host.is_local, bridge_made=True))
    docker.unpause(sandbox.container_id)


def run_reset(sandbox: Sandbox, action: str) -> None:
    docker = engine.engine_for(sandbox)
    if sandbox.container_id:
        docker.remove_container(sandbox.container_id)
    _remove_ours(sandbox)
    warm.after_recreate(sandbox, docker)
    save_claimed(sandbox, action, container_id="", warm_slot="")


def run_clean(sandbox: Sandbox, action: str) -> None:
    run_reset(sandbox, action)
    engine.engine_for(sandbox).remove_images(sandbox_uuid=str(sandbox.uuid))


def run_destroy(sandbox: Sandbox, action: str) -> None:
    """Everything goes, whatever is or is not on disk; what is not this sandbox's stays, and the
    outcome says so."""
    from storage import pool
    from storage import services as storage

    docker = engine.engine_for(sandbox)
    if sandbox.container_id:
        docker.remove_container(sandbox.container_id)
    if (slot := warm.taken_by(sandbox)) is not None:  # taken at its create, never started
        warm.discard(slot, docker, taken=True)
    warm.after_recreate(sandbox, docker)
    left = []
    if not docker.remove_container_if_ours(sandbox.container_name, labels=engine.ownership_labels(str(sandbox.uuid))):
        left.append(f"container {sandbox.container_name} is not this sandbox's; left in place")
    docker.remove_images(sandbox_uuid=str(sandbox.uuid))
    if not docker.remove_volume(sandbox.volume_name, labels=labels(sandbox)):
        left.append(f"volume {sandbox.volume_name} is not this sandbox's; left in place")
    for name, found in docker.instance_volumes(f"{engine.LABEL_UUID}={sandbox.uuid}").items():
        if "ccpanel.transfer" in found:  # what a move or a download carried archives in (services.moves)
            docker.remove_volume(name, labels=labels(sandbox))
    if sandbox.in_pool and not pool.active():
        raise workspace.WorkspaceError(
            "The storage pool is not mounted at the workspace root: nothing of the sandbox's data could be removed. "
            "Mount it (make run), then destroy again."
        )
    if sandbox.in_pool:
        pool.lift_limit(sandbox.disk_group)  # a full group could not even be emptied
    try:
        note = workspace.workspace_remove(sandbox.name, str(sandbox.uuid))
    except BaseException:
        if sandbox.in_pool:
            pool.set_limit(sandbox.disk_group, sandbox.disk_mb or settings.SANDBOX_DEFAULT_DISK_MB)  # what is left stays bounded
        raise
    if note:
        left.append(note)
        if sandbox.in_pool:
            pool.set_limit(sandbox.disk_group, sandbox.disk_mb or settings.SANDBOX_DEFAULT_DISK_MB)
    else:
        left += storage.forget(sandbox)  # its checkpoints and quota group
    secrets.forget(sandbox)
    save_claimed(sandbox, action, container_id="", status_detail="; ".join(left))


_LIVE = frozenset({S.CREATING, S.RUNNING, S.STOPPED, S.PAUSED, S.ERROR})
ACTIONS: dict[str, Action] = {
    A.START: Action(frozenset({S.STOPPED, S.ERROR, S.CREATING}), S.RUNNING, run_start),
    A.STOP: Action(frozenset({S.RUNNING, S.PAUSED, S.ERROR}), S.STOPPED, run_stop),
    A.RESTART: Action(frozenset({S.RUNNING, S.ERROR}), S.RUNNING, run_restart),
    A.PAUSE: Action(frozenset({S.RUNNING}), S.PAUSED, run_pause),
    A.UNPAUSE: Action(frozenset({S.PAUSED}), S.RUNNING, run_unpause),
    A.RESET: Action(_LIVE - {S.CREATING}, S.STOPPED, run_reset),
    A.CLEAN: Action(_LIVE - {S.CREATING}, S.STOPPED, run_clean),
    A.DESTROY: Action(_LIVE | {S.DESTROYING}, S.DESTROYED, run_destroy, role=Role.ADMIN, preempts=True),
}
if set(ACTIONS) != set(A.values):  # checked at import: an action added without its row fails at once
    raise RuntimeError(f"every Sandbox.Action needs one row in ACTIONS; these do not match: {sorted(set(ACTIONS) ^ set(A.values))}")


def allowed_actions(sandbox: Sandbox, *, role: str | None) -> list[str]:
    """The actions `sandbox_request_action` would accept now from someone with `role`: what
    the pages show as buttons, so a page never offers what the service refuses, nor hides
    what it allows."""
    return actions_allowed(
        status=sandbox.status,
        on_hold=sandbox.on_hold,
        pending_action=sandbox.pending_action,
        unreachable=bool(unreachable_reason(sandbox.host)),
        role=role,
    )


def actions_allowed(*, status: str, on_hold: bool, pending_action: str, unreachable: bool, role: str | None) -> list[str]:
    """allowed_actions() from a sandbox's columns (the API's list reads them as values)."""
    if unreachable:
        return []
    return [
        name
        for name, a in ACTIONS.items()
        if status in a.allowed_from
        and not on_hold
        and role_allows(role, a.role)
        and (not pending_action or (a.preempts and pending_action != name))
    ]


def sandbox_request_action(*, actor, sandbox: Sandbox, action: str, source_ip: str | None = None, enqueue: bool = True) -> None:
    """Claim `sandbox` for `action` and enqueue it; raise SandboxError if it cannot run now, and
    NotQueued if the queue refused its task (the claim is released then, with the reason)."""
    spec = ACTIONS.get(action)
    if spec is None:
        raise SandboxError(f"Unknown action {action!r}.")
    authorize(actor, sandbox.team, spec.role)
    if reason := unreachable_reason(Host.objects.get(sandboxes=sandbox)):
        raise SandboxError(f"{reason} Its sandboxes keep their state and can be acted on again once it answers.")
    queued = None
    with transaction.atomic():
        before = claim(
            sandbox=sandbox,
            action=action,
            allowed_from=spec.allowed_from,
            preempts=spec.preempts,
            status=S.DESTROYING if action == A.DESTROY else None,
        )
        details = {"from": before["status"]}
        if before["pending_action"]:
            details["interrupted"] = before["pending_action"]
        audit(actor, f"sandbox.{action}", sandbox, details, source_ip)
        if action == A.DESTROY:
            for cancel in CANCELLERS:
                cancel(sandbox)
        if enqueue:
            queued = enqueue_task(sandbox.pk, action, before["status"])
        live.sandbox_changed(sandbox)
    if queued is not None and queued.refused:
        raise NotQueued(action, queued.refused)


def sandbox_perform(*, sandbox_id: int, action: str) -> None:
    """Carry out a claimed action against Docker and record how it ended. Every way it can end
    is recorded: done, refused by the policy, failed with the reason, or given up after
    SANDBOX_MAX_ATTEMPTS runs whose worker died."""
    sandbox = take_run(sandbox_id, action)
    if sandbox is None:
        return
    if sandbox.attempts > settings.SANDBOX_MAX_ATTEMPTS:
        finish(
            sandbox,
            action,
            S.ERROR,
            f"{action} was given up after {settings.SANDBOX_MAX_ATTEMPTS} attempts: its worker stopped each time before it finished.",
        )
        return
    with heartbeat(sandbox.pk, action):
        try:
            ACTIONS[action].run(sandbox, action)
        except LostClaim:
            _undo_after_lost_claim(sandbox, action)
            return
        except policy.PolicyViolation as exc:
            ended = finish(sandbox, action, S.ERROR, "Refused by the security policy: " + " ".join(exc.problems), outcome="refused")
        except (engine.EngineError, workspace.WorkspaceError, OSError) as exc:
            ended = finish(sandbox, action, S.ERROR, f"{action} failed: {exc}")
        except SoftTimeLimitExceeded:
            ended = finish(
                sandbox,
                action,
                S.ERROR,
                f"{action} took longer than its time limit ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s) and was stopped.",
            )
        except Exception as exc:  # an action always ends; the log has the traceback
            log.exception("%s of sandbox %s failed unexpectedly", action, sandbox.name)
            ended = finish(sandbox, action, S.ERROR, f"{action} failed unexpectedly ({type(exc).__name__}: {exc}); see the worker's log.")
        else:
            ended = finish(sandbox, action, ACTIONS[action].result, sandbox.status_detail if action == A.DESTROY else "", outcome="done")
        if not ended:
            # Destroy took the sandbox over while this ran, and this run did not notice (it ended
            # some other way): whatever it made must not outlive the sandbox either.
            _undo_after_lost_claim(sandbox, action)
    if sandbox.network_mode == Sandbox.Network.ALLOWLIST and action in (A.STOP, A.RESTART, A.RESET, A.DESTROY):
        grants_repair()  # an address it no longer holds keeps nothing (the watcher does it too)


def _undo_after_lost_claim(sandbox: Sandbox, action: str) -> None:
    """Destroy took the sandbox over while `action` ran: make sure nothing this run made (a
    container, the folder, the volume) outlives it. Destroy's own run removes the rest."""
    log.warning(
        "%s of sandbox %s was interrupted by %s",
        action,
        sandbox.name,
        Sandbox.objects.filter(pk=sandbox.pk).values_list("pending_action", flat=True).first(),
    )
    docker = engine.engine_for(sandbox)
    try:
        docker.remove_container_if_ours(sandbox.container_name, labels=engine.ownership_labels(str(sandbox.uuid)))
        if Sandbox.objects.filter(pk=sandbox.pk, status__in=[S.DESTROYING, S.DESTROYED]).exists():
            warm.after_recreate(sandbox, docker)
            docker.remove_volume(sandbox.volume_name, labels=labels(sandbox))
            workspace.workspace_remove(sandbox.name, str(sandbox.uuid))
    except (engine.EngineError, workspace.WorkspaceError, OSError):
        log.warning("could not undo the interrupted %s of %s", action, sandbox.name, exc_info=True)
