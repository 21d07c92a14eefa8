"""The warm pool: per host, image and network mode, a few started, hardened containers with
their folders ready, so that a create that matches one runs in tens of milliseconds.

A slot (WarmSlot) is made as a sandbox is: a subvolume of the storage pool at
WORKSPACE_ROOT/.warm/<key>, filled with the six folders, the home and a marker holding the UUID
the sandbox that takes it will have; a home volume bound to it; a container made from the
sandbox spec of a sandbox with the panel's defaults (policy.check judges it like any other) and
started through the egress gate, its mounts read back. Its name, label and folders are the
slot's own (`as_slot`); nothing of anyone's is in it.

A create whose spec would be the slot's but for memory, CPUs and the process limit (no extra
mount, no secret in the environment, the default runtime, root file system and sysctls: see
`matches`) takes a ready slot in its transaction and gets its UUID. Its start (`claim`) then,
instead of making folders and a container:

1. reads the container back: running, on the build its image's name gives now, and as the
   sandbox's spec would be in the slot;
2. renames the subvolume to WORKSPACE_ROOT/<name> (never over anything) and records its
   folders' identities, puts the subvolume's quota group at the sandbox's quota, makes the
   sandbox's own home volume (bound to its home, for backups and its next start);
3. judges the sandbox's own spec and folders with policy.check under the rules in force (as
   a cold start does), renames the container, sets its limits (`docker update`), reads it back
   again (nothing but the slot's names may differ from the sandbox's spec), checks that the
   very folders are mounted, passes the egress gate, hands over the file secrets and grants
   the allowlist.

Whatever fails, the slot is discarded and the start goes on as a cold one (actions.run_start),
which judges everything again; a slot is never used half. Docker recorded the slot's folders as
the container's mount sources and cannot change that, nor its labels or host name: the sandbox
keeps `warm_slot` while it runs that container, its checks compare the container with its spec
in the slot (`running_spec`), and its next start makes a container from its own spec (the
drift from the saved settings says so), never starts this one again.

The pool is topped up in the background (`fill`, a task on the host's worker) after every take
and by the periodic resync, which also removes what a worker that died left (`tidy`).
"""

import logging
import os
import secrets as pysecrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlpanel.db import serialise

from .. import engine, network, policy, workspace
from ..models import Mount, Sandbox, WarmSlot
from .rules import policy_rules
from .specs import sandbox_spec

log = logging.getLogger(__name__)
W = WarmSlot.Status
HOSTNAME = "sandbox"  # a slot's container is made before its sandbox has a name
UPDATABLE = ("memory ", "swap ", "CPUs ", "process limit ")  # what `docker update` sets at a take
STALE = timedelta(minutes=10)  # a slot still preparing after this lost its worker


class Unusable(Exception):
    """A slot that cannot be taken as it is: it is discarded, and the start goes on cold."""


# --- names and specs ---------------------------------------------------------------------------


def container_name(key: str) -> str:
    return Sandbox(name=f"warm_{key}").container_name  # "_" never appears in a sandbox's name


def volume_name(slot: WarmSlot) -> str:
    return f"{container_name(slot.key)}-home-{slot.uuid}"


def slot_labels(slot: WarmSlot) -> dict[str, str]:
    return {**engine.managed_labels(f"warm_{slot.key}", str(slot.uuid)), engine.LABEL_WARM: slot.key}


def as_slot(spec: policy.ContainerSpec, base: Path, slot: WarmSlot) -> policy.ContainerSpec:
    """`spec`, built for a sandbox whose folder is `base`, as its container is in `slot`: the
    slot's folders, home volume, name, labels and host name."""
    into = workspace.slot_path(slot.key)

    def moved(path: str) -> str:
        return str(into / Path(path).relative_to(base)) if policy.is_within(path, str(base)) else path

    return replace(
        spec,
        name=container_name(slot.key),
        hostname=HOSTNAME,
        binds=tuple(replace(b, source=moved(b.source)) for b in spec.binds),
        volumes=tuple(replace(v, name=volume_name(slot), device=moved(v.device) if v.device else "") for v in spec.volumes),
        labels={**spec.labels, engine.LABEL_SANDBOX: f"warm_{slot.key}", engine.LABEL_WARM: slot.key},
    )


def _template(slot: WarmSlot) -> Sandbox:
    """The sandbox a slot's container is made for: the panel's defaults, the slot's image,
    network mode and UUID (never saved)."""
    template = Sandbox(
        name="warm",
        uuid=slot.uuid,
        host_id=slot.host_id,
        image=slot.image,
        network_mode=slot.network_mode,
        memory_mb=settings.SANDBOX_DEFAULT_MEMORY_MB,
        cpus=Decimal(str(settings.SANDBOX_DEFAULT_CPUS)),
        pids_limit=settings.SANDBOX_PIDS_LIMIT,
        disk_group=slot.disk_group or "pending",
    )
    into, base = str(workspace.slot_path(slot.key)), template.workspace_path
    template.host_path_ids = {str(base / Path(p).relative_to(into)): c for p, c in (slot.host_path_ids or {}).items()}
    return template


def slot_spec(slot: WarmSlot) -> policy.ContainerSpec:
    """The slot's container: given nothing (the digest label of no secret, as a sandbox without
    any has: one that has some differs, and starts cold)."""
    from ..secrets import LABEL_SECRETS, digest

    template = _template(slot)
    spec = as_slot(sandbox_spec(template, [], secrets=False), template.workspace_path, slot)
    return replace(spec, labels={**spec.labels, LABEL_SECRETS: digest([])})


def running_spec(sandbox: Sandbox, *, secrets: bool = True) -> policy.ContainerSpec:
    """What the sandbox's running container is measured against: its spec, as it is in the
    slot it was taken from while it runs that container."""
    spec = sandbox_spec(sandbox, secrets=secrets)
    if not sandbox.warm_slot:
        return spec
    slot = WarmSlot(key=sandbox.warm_slot, uuid=sandbox.uuid)
    return as_slot(spec, sandbox.workspace_path, slot)


def _comparable(spec: policy.ContainerSpec) -> policy.ContainerSpec:
    from ..secrets import LABEL_SECRETS

    return replace(
        spec,
        labels={k: v for k, v in spec.labels.items() if k != LABEL_SECRETS},  # read at the claim
        memory_bytes=0,
        nano_cpus=0,
        pids_limit=0,
        binds=tuple(replace(b, chain=None) for b in spec.binds),
        volumes=tuple(replace(v, chain=None) for v in spec.volumes),
    )


def matches(sandbox: Sandbox, mounts: list[Mount], slot: WarmSlot) -> bool:
    """Whether `sandbox` (about to be saved, with `mounts`) would have the slot's container but
    for what `docker update` sets: judged on the specs, so that any setting that reaches the
    container (a mount, the runtime, the sysctls, the in-memory folders' size) keeps it cold."""
    if mounts:
        return False
    taken = replace_sandbox(sandbox, uuid=slot.uuid, disk_group=slot.disk_group or "pending")
    mine = as_slot(sandbox_spec(taken, [], secrets=False), taken.workspace_path, slot)
    return _comparable(mine) == _comparable(slot_spec(slot))


# --- taking one at a create --------------------------------------------------------------------


def take(sandbox: Sandbox, mounts: list[Mount]) -> WarmSlot | None:
    """In the create's transaction, before the sandbox is saved: a ready slot on its host that
    it matches, marked taken (the sandbox gets its UUID; the caller records the sandbox on it
    once saved), or None."""
    if not settings.WARM_POOL or mounts or sandbox.host_id is None:
        return None
    candidates = WarmSlot.objects.filter(
        host_id=sandbox.host_id, image=sandbox.image, network_mode=sandbox.network_mode, status=W.READY
    ).order_by("created_at", "pk")[:4]
    for slot in candidates:
        if not matches(sandbox, mounts, slot):
            continue
        if WarmSlot.objects.filter(pk=slot.pk, status=W.READY).update(status=W.TAKEN):
            sandbox.uuid = slot.uuid
            return slot
    return None


def taken_by(sandbox: Sandbox) -> WarmSlot | None:
    if not sandbox.pk or sandbox.container_id:
        return None
    return WarmSlot.objects.filter(sandbox=sandbox, status=W.TAKEN).first()


# --- claiming it at the start ------------------------------------------------------------------


def claim(sandbox: Sandbox, action: str, slot: WarmSlot, docker: engine.Engine) -> bool:
    """Make the slot's container the sandbox's (see the module's docstring); True when it runs
    as the sandbox's, False when the slot could not be used (it is discarded then, and the
    caller starts the sandbox cold)."""
    from storage import pool

    from .actions import save_claimed
    from .errors import LostClaim

    try:
        _claim(sandbox, action, slot, docker, save_claimed)
        return True
    except LostClaim:
        raise
    except (Unusable, engine.EngineError, workspace.WorkspaceError, policy.PolicyViolation, pool.PoolError, OSError) as exc:
        log.warning("warm slot %s could not be taken by %s (%s); starting it cold", slot.key, sandbox.name, exc)
        discard(slot, docker, taken=True)
        if sandbox.warm_slot:
            save_claimed(sandbox, action, warm_slot="", container_id="")
        return False


def _claim(sandbox: Sandbox, action: str, slot: WarmSlot, docker: engine.Engine, save_claimed) -> None:
    """The take itself. The engine's calls (rename, update, the sandbox's home volume) and the
    egress gate's reading run in threads beside the folders' move, each a few milliseconds to a
    few tens: nothing of them depends on another until the read-back, which waits for all."""
    from .actions import _deliver, _grant_listed, _require_egress_rules, _verify_mounted

    found = docker.inspect_container(slot.container_id) if slot.container_id else None
    if found is None or not found["State"].get("Running"):
        raise Unusable("its container is not running")
    if found.get("Image") != docker.image_id(slot.image):
        # Docker records the reference, not the build: a cold start would run the one it names now.
        raise Unusable(f"it runs another build of {slot.image} than the one that name gives now")
    taken = _as_taken(sandbox, slot)
    wanted = running_spec(taken)
    drift = [d for d in policy.spec_drift(wanted, found) if not d.startswith(UPDATABLE)]
    if drift:
        raise Unusable("its container differs: " + "; ".join(drift))
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix=f"warm-{slot.key}") as beside:
        gate = (
            beside.submit(network.may_join, sandbox.network_mode, local_engine=docker.host.is_local, bridge_made=True)
            if sandbox.network_mode != Sandbox.Network.NONE
            else None
        )
        renamed = beside.submit(_rename, docker, slot.container_id, sandbox)
        updated = beside.submit(
            docker.update_limits,
            slot.container_id,
            memory_bytes=wanted.memory_bytes,
            nano_cpus=wanted.nano_cpus,
            pids_limit=wanted.pids_limit,
        )
        _take_folders(sandbox, action, slot, docker, save_claimed)
        # What a cold start judges: the sandbox's own spec under the rules in force now (they may
        # have changed since the slot was made, or since the create), its folders as they are.
        policy.check(sandbox_spec(sandbox), policy_rules())
        renamed.result()
        updated.result()
        spec = running_spec(sandbox)
        drift = policy.spec_drift(spec, docker.inspect_container(slot.container_id))
        if drift:
            raise Unusable("once taken it differs: " + "; ".join(drift))
        _verify_mounted(docker, slot.container_id, spec)
        if gate is not None:
            _require_egress_rules(sandbox, gate.result())
    _deliver(sandbox, docker, slot.container_id)
    _grant_listed(sandbox, docker, slot.container_id)
    WarmSlot.objects.filter(pk=slot.pk).delete()
    host_name = slot.host.name
    transaction.on_commit(lambda: _queue_fill(host_name))


def _take_folders(sandbox: Sandbox, action: str, slot: WarmSlot, docker: engine.Engine, save_claimed) -> None:
    """The slot's subvolume becomes the sandbox's folder, with its quota, its identities
    recorded, and its own home volume bound to its home (what backups and its next start use)."""
    from storage import pool

    from .specs import labels

    workspace.slot_take(slot.key, sandbox.name, str(sandbox.uuid))
    chains = workspace.workspace_create(sandbox.name, str(sandbox.uuid), subvolume=True)
    pool.set_limit(slot.disk_group, sandbox.disk_mb or settings.SANDBOX_DEFAULT_DISK_MB)
    save_claimed(
        sandbox,
        action,
        host_path_ids={p: [list(pair) for pair in c] for p, c in chains.items()},
        disk_group=slot.disk_group,
        disk_mb=sandbox.disk_mb or settings.SANDBOX_DEFAULT_DISK_MB,
        warm_slot=slot.key,
        container_id=slot.container_id,
    )
    docker.ensure_volume(sandbox.volume_name, labels=labels(sandbox), device=str(sandbox.home_path))


def _rename(docker: engine.Engine, container_id: str, sandbox: Sandbox) -> None:
    """The container gets the sandbox's name; one of this sandbox's left by an earlier run is
    removed first, one of anybody else's is never touched."""
    try:
        docker.rename_container(container_id, sandbox.container_name)
    except engine.EngineError:
        state = docker.container_state(container_id)
        if state is not None and state.name == sandbox.container_name:
            return  # renamed already, by a run whose worker died
        if not docker.remove_container_if_ours(sandbox.container_name, labels=engine.ownership_labels(str(sandbox.uuid))):
            raise engine.EngineError(f"A container named {sandbox.container_name} exists that is not this sandbox's.") from None
        docker.rename_container(container_id, sandbox.container_name)


def _as_taken(sandbox: Sandbox, slot: WarmSlot) -> Sandbox:
    """The sandbox as it will be once it has taken the slot (for the first read-back)."""
    return replace_sandbox(sandbox, warm_slot=slot.key, disk_group=slot.disk_group)


def replace_sandbox(sandbox: Sandbox, **changes) -> Sandbox:
    copy = Sandbox(**{f.attname: getattr(sandbox, f.attname) for f in Sandbox._meta.concrete_fields})
    copy._state.adding = False
    for name, value in changes.items():
        setattr(copy, name, value)
    return copy


def after_recreate(sandbox: Sandbox, docker: engine.Engine) -> None:
    """The container taken from the slot is gone (made again from the sandbox's spec, reset,
    destroyed): its slot's home volume goes too (it was bound to the slot's folder, which is
    the sandbox's now)."""
    if not sandbox.warm_slot:
        return
    slot = WarmSlot(key=sandbox.warm_slot, uuid=sandbox.uuid)
    docker.remove_volume(volume_name(slot), labels=engine.ownership_labels(str(sandbox.uuid)))


# --- filling and discarding --------------------------------------------------------------------


def _queue_fill(host_name: str) -> None:
    from ..tasks import warm_fill_task

    try:
        warm_fill_task.delay(host_name)
    except Exception as exc:  # noqa: BLE001 - kombu raises several types for "broker down"; the resync fills later
        log.info("could not queue the warm pool's top-up: %s", exc)


def fill(host=None) -> int:
    """Top up the warm pools of `host` (a hosts.Host; this machine's when None) to WARM_POOL,
    and discard the ready slots it no longer asks for; returns how many slots were made ready.
    Safe to run twice at once: the slots to make are counted and recorded under a lock, and each
    run makes only the ones it recorded."""
    from hosts.services import local_host
    from storage import pool

    host = host or local_host()
    if not pool.active() or not engine.host_of(host).on_this_machine:
        return 0
    docker = engine.engine_for_host(engine.host_of(host))
    wanted = {(image, mode): count for image, mode, count in settings.WARM_POOL} if host.accepts_sandboxes else {}
    made: list[WarmSlot] = []
    with transaction.atomic():
        serialise(f"warm-pool-{host.pk}")
        # A create takes a slot without this lock: only the slots still ready when marked here
        # are discarded (one taken meanwhile is its sandbox's).
        extra = [s for s in _surplus(host, wanted) if WarmSlot.objects.filter(pk=s.pk, status=W.READY).update(status=W.TAKEN)]
        have: dict[tuple[str, str], int] = {}
        for image, mode in WarmSlot.objects.filter(host=host, status__in=[W.PREPARING, W.READY]).values_list("image", "network_mode"):
            have[(image, mode)] = have.get((image, mode), 0) + 1
        for (image, mode), count in wanted.items():
            for _ in range(count - have.get((image, mode), 0)):
                made.append(WarmSlot.objects.create(key=pysecrets.token_hex(8), host=host, image=image, network_mode=mode))
    for slot in extra:
        discard(slot, docker, taken=True)
    made_ready = 0
    for slot in made:
        try:
            _prepare(slot, docker)
            made_ready += 1
        except (engine.EngineError, workspace.WorkspaceError, policy.PolicyViolation, pool.PoolError, network.EgressError, OSError) as exc:
            log.warning("warm slot %s (%s, %s) could not be made: %s", slot.key, slot.image, slot.network_mode, exc)
            discard(slot, docker)
    return made_ready


def _surplus(host, wanted: dict[tuple[str, str], int]) -> list[WarmSlot]:
    """The ready slots of `host` beyond what `wanted` asks for, per image and network mode."""
    have: dict[tuple[str, str], list[WarmSlot]] = {}
    for slot in WarmSlot.objects.filter(host=host, status__in=[W.PREPARING, W.READY]):
        have.setdefault((slot.image, slot.network_mode), []).append(slot)
    extra: list[WarmSlot] = []
    for pool_key, slots in have.items():
        ready = [s for s in slots if s.status == W.READY]
        extra += ready[: max(len(slots) - wanted.get(pool_key, 0), 0)]
    return extra


def _prepare(slot: WarmSlot, docker: engine.Engine) -> None:
    from storage import pool

    if not docker.image_exists(slot.image):
        raise engine.EngineError(f"the image {slot.image} is not on this host")
    chains = workspace.slot_create(slot.key, str(slot.uuid))
    slot.host_path_ids = {p: [list(pair) for pair in c] for p, c in chains.items()}
    slot.disk_group = pool.ensure_group(workspace.slot_path(slot.key), limit_mb=settings.SANDBOX_MIN_DISK_MB)
    WarmSlot.objects.filter(pk=slot.pk).update(host_path_ids=slot.host_path_ids, disk_group=slot.disk_group)
    docker.ensure_volume(volume_name(slot), labels=slot_labels(slot), device=str(workspace.slot_path(slot.key) / workspace.HOME))
    network.ensure_network_of(docker, slot.network_mode)
    spec = slot_spec(slot)
    rules = policy_rules()
    if not docker.remove_container_if_ours(spec.name, labels=slot_labels(slot)):
        raise engine.EngineError(f"a container named {spec.name} is not the panel's")
    container_id = docker.create_container(spec, rules=rules)  # judged by policy.check there
    if not WarmSlot.objects.filter(pk=slot.pk, status=W.PREPARING).update(container_id=container_id):
        docker.remove_container(container_id)
        raise engine.EngineError("the slot was discarded meanwhile")
    slot.container_id = container_id
    if slot.network_mode != Sandbox.Network.NONE:
        decision = network.may_join(slot.network_mode, local_engine=docker.host.is_local, bridge_made=True)
        if not decision.allowed:
            raise policy.PolicyViolation([decision.reason, *decision.problems])
    if slot.network_mode == Sandbox.Network.ALLOWLIST and network.enforced():
        from .allowlist import sync_grants

        sync_grants()  # as before a cold start: no grant of an earlier holder of its address is left
    from .actions import _verify_mounted

    docker.start(container_id)
    _verify_mounted(docker, container_id, spec)
    if not WarmSlot.objects.filter(pk=slot.pk, status=W.PREPARING).update(status=W.READY):
        raise engine.EngineError("the slot was discarded meanwhile")


def discard(slot: WarmSlot, docker: engine.Engine, *, taken: bool = False) -> None:
    """Remove a slot: its container and home volume (by the slot's labels: never a sandbox's
    own), its subvolume if it is still the slot's, its row. Best effort: what is left is
    removed by `tidy`."""
    from storage import pool

    ours = engine.ownership_labels(str(slot.uuid))
    try:
        if slot.container_id:
            state = docker.container_state(slot.container_id)
            if state is not None and engine.carries(state.labels, {**ours, engine.LABEL_WARM: slot.key}):
                docker.remove_container(slot.container_id)
        docker.remove_container_if_ours(container_name(slot.key), labels={**ours, engine.LABEL_WARM: slot.key})
        docker.remove_volume(volume_name(slot), labels=ours)
        if _still_the_slots(slot):  # not the sandbox's folder yet
            if slot.disk_group:
                _lift(slot.disk_group)
                try:
                    pool.release_group(slot.disk_group)  # before the delete: btrfs refuses it afterwards
                except pool.PoolError as exc:
                    log.info("warm slot %s: %s", slot.key, exc)
            workspace.slot_remove(slot.key)
        elif os.path.lexists(path := workspace.slot_path(slot.key)):
            if pool.is_subvolume(path):  # not the slot's: someone's data, left alone
                log.warning("warm slot %s: %s is a subvolume that is not the slot's; left in place", slot.key, path)
            else:
                workspace.slot_remove(slot.key)  # a folder made there since: never the slot's group
    except (engine.EngineError, workspace.WorkspaceError, pool.PoolError, OSError) as exc:
        log.warning("warm slot %s: not everything was removed (%s)", slot.key, exc)
    WarmSlot.objects.filter(pk=slot.pk).delete()


def _still_the_slots(slot: WarmSlot) -> bool:
    """Whether the slot's subvolume is still at its path, its quota group still the slot's: the
    subvolume there is the one the group was made for (1/<its id>), and no sandbox records the
    group (a take renamed it to the sandbox's folder; anything at the path now is something else)."""
    from storage import pool

    path = workspace.slot_path(slot.key)
    if not pool.is_subvolume(path):
        return False
    if not slot.disk_group:
        return True
    if Sandbox.objects.filter(disk_group=slot.disk_group).exists():
        return False
    try:
        return slot.disk_group == f"1/{pool.subvolume_id(path)}"
    except pool.PoolError:
        return False


def _lift(group: str) -> None:
    from storage import pool

    try:
        if pool.usage(group) is not None:
            pool.lift_limit(group)
    except pool.PoolError:
        pass


def _outdated(slot: WarmSlot, docker: engine.Engine, images: dict[str, str | None]) -> bool:
    """Whether the slot's container runs another build of its image than the one its reference
    names now (the image was rebuilt or pulled since): a create would otherwise get the old one."""
    if slot.image not in images:
        images[slot.image] = docker.image_id(slot.image)
    try:
        running = docker.inspect_container(slot.container_id).get("Image")
    except engine.NotFound:
        return True
    return running != images[slot.image]


def _status(container_id: str, states: dict[str, engine.ContainerState], docker: engine.Engine) -> str:
    """The container's status as listed, or asked now if it was made since the listing."""
    if container_id in states:
        return states[container_id].status
    found = docker.container_state(container_id) if container_id else None
    return found.status if found is not None else ""


def tidy(host=None) -> int:
    """The periodic resync's part: ready slots WARM_POOL no longer asks for, whose container no
    longer runs (stopped by hand, or with every networked container when the egress rules could
    not be applied) or runs an older build of its image than its reference names now, slots a dead
    worker left preparing, taken slots whose sandbox is gone or was started otherwise,
    containers, home volumes and folders of slots with no row. Returns how many were removed."""
    from hosts.services import local_host
    from storage import pool

    host = host or local_host()
    if not engine.host_of(host).on_this_machine:
        return 0
    docker = engine.engine_for_host(engine.host_of(host))
    removed = 0
    stale = timezone.now() - STALE
    # Listed before the rows are read: a slot made meanwhile has its row, and is never taken for
    # one whose row is gone.
    states = {state.id: state for state in docker.instance_containers()}
    volumes = docker.instance_volumes(engine.LABEL_WARM)
    images: dict[str, str | None] = {}
    asked = {(image, mode) for image, mode, _count in settings.WARM_POOL}  # fill sees to the counts
    on_disk = workspace.slot_keys() if pool.active() else []
    discarded: set[str] = set()
    for slot in WarmSlot.objects.filter(host=host).select_related("sandbox"):
        box = slot.sandbox
        stopped = slot.status == W.READY and _status(slot.container_id, states, docker) != "running"
        gone = (
            stopped
            or (slot.status == W.READY and (slot.image, slot.network_mode) not in asked)  # the pool was turned off or changed
            or (slot.status == W.READY and _outdated(slot, docker, images))
            or (slot.status == W.PREPARING and slot.created_at < stale)
            or (
                slot.status == W.TAKEN
                and slot.created_at < stale
                and (
                    box is None
                    or box.status in (Sandbox.Status.DESTROYING, Sandbox.Status.DESTROYED)
                    # No run of the sandbox's holds it (its start never ran, or ended without
                    # finishing the take; a run under way is never disturbed): it is unlinked,
                    # while the sandbox is still idle, and its next start goes cold.
                    or (
                        not box.pending_action
                        and WarmSlot.objects.filter(pk=slot.pk, status=W.TAKEN, sandbox__pending_action="").update(sandbox=None)
                    )
                )
            )
        )
        # Marked first, and only if it is still as it was read: a create may have taken the
        # ready slot meanwhile (its container and folders are its sandbox's then).
        if gone and slot.status != W.TAKEN and not WarmSlot.objects.filter(pk=slot.pk, status=slot.status).update(status=W.TAKEN):
            gone = False
        if gone:
            discard(slot, docker, taken=True)
            states.pop(slot.container_id, None)
            discarded.add(slot.key)
            removed += 1
    # Every host's: the engines on this machine's Unix sockets share its WORKSPACE_ROOT/.warm.
    keys = set(WarmSlot.objects.values_list("key", flat=True)) | discarded
    keys |= set(Sandbox.objects.exclude(warm_slot="").values_list("warm_slot", flat=True))
    for state in states.values():
        key = state.labels.get(engine.LABEL_WARM)
        if key and key not in keys and state.name == container_name(key):
            docker.remove_container(state.id)  # never taken, and its row is gone
            removed += 1
    for name, found in volumes.items():
        key = found.get(engine.LABEL_WARM, "")
        if key not in keys and name == volume_name(WarmSlot(key=key, uuid=found.get(engine.LABEL_UUID, ""))):
            try:
                docker.remove_volume(name, labels={engine.LABEL_WARM: key})  # a discard that stopped half-way left it
                removed += 1
            except engine.EngineError as exc:  # still mounted by a container: the next tidy
                log.info("warm slot %s: its home volume is left for now (%s)", key, exc)
    if pool.active():
        for key in on_disk:
            if key not in keys:
                workspace.slot_remove(key)
                removed += 1
    return removed
