"""Creating a sandbox: every rule checked here, whoever calls (the form, the CLI, a script)."""

import logging
import uuid as uuidlib
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from controlpanel.db import serialise
from hosts import placement
from hosts.models import LOCAL
from hosts.models import Host as HostRow
from teams import policy as team_policy
from teams.models import Team
from teams.permissions import Role, actor_user, authorize

from .. import engine, live, policy, workspace
from ..models import Mount, Sandbox, WarmSlot
from . import warm
from .allowlist import allowlist_errors
from .auditing import audit
from .claims import enqueue as enqueue_action
from .errors import InvalidInput, NotQueued
from .rules import host_has_selinux, policy_rules
from .specs import sandbox_spec

S = Sandbox.Status
log = logging.getLogger(__name__)


def _engine_of(on: engine.Host | None) -> engine.Engine:
    return engine.engine_for_host(on) if on is not None else engine.engine_for()


def validate_runtime(runtime, *, on: engine.Host | None = None) -> dict[str, list[str]]:
    """A runtime the panel allows and the engine (`on`, else this machine's) has registered."""
    if runtime not in Sandbox.Runtime.values:
        return {"runtime": [f"Isolation: one of {', '.join(Sandbox.Runtime.values)}."]}
    if runtime != Sandbox.Runtime.RUNC:
        try:
            if runtime not in _engine_of(on).runtimes():
                return {"runtime": ["gVisor is not set up on this machine: run `make run PANEL_GVISOR=1` once (see the README)."]}
        except engine.EngineUnavailable:
            pass  # Docker says so itself at the start
    return {}


def validate_settings(
    *, name, image, memory_mb, cpus, network_mode, image_present: bool = True, on: engine.Host | None = None
) -> dict[str, list[str]]:
    """The rules for a new sandbox's settings, the same for the form, the CLI and any caller
    (a restore judges a manifest's settings with them too, `image_present` False). The image
    must be on the engine `on` (the host it is placed on; this machine's when None)."""
    errors: dict[str, list[str]] = {}

    def add(field_name: str, message: str) -> None:
        errors.setdefault(field_name, []).append(message)

    for problem in policy.check_name(name) if isinstance(name, str) else ["Name: text."]:
        add("name", problem)
    for problem in policy.check_image_ref(image) if isinstance(image, str) else ["Image: text."]:
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
    if isinstance(image, str) and image.startswith(engine.EVIDENCE_REPOSITORY):
        add("image", f"{image} is kept as evidence of an incident; it is never run.")
    if image_present and not errors.get("image"):
        try:
            if not _engine_of(on).image_exists(image):
                where = "this machine" if on is None or on.name == LOCAL else f"host {on.name}"
                add("image", f"Image {image} is not on {where}; build or pull it first.")
        except engine.EngineUnavailable:
            pass  # recorded anyway: its start fails with the reason, and Start retries
    return errors


def _judge_extra_mounts(extra_mounts: Sequence[tuple[str, str, bool]], rules: policy.Rules) -> tuple[dict, list[str]]:
    """Judge each extra mount's source on disk now; return ({path: chain}, problems). Judged by
    identity as well as by name, so that a second name for a folder (a bind mount, a case-
    insensitive file system) can neither reach the workspace nor hide an overlap."""
    chains: dict[str, tuple] = {}
    problems: list[str] = []
    if not extra_mounts:
        return chains, problems
    try:
        mounts = policy.read_mountinfo()
        forbidden = policy.forbidden_chains(rules)
    except policy.HostPathError as exc:
        return chains, [f"Extra mounts cannot be judged: {exc}"]
    for host, _target, _ro in extra_mounts:
        lexical = policy.check_extra_source_lexically(host, rules)
        if lexical:
            problems += lexical
            continue
        root = max((r for r in rules.mount_roots if policy.is_within(host, r)), key=len)
        try:
            chains[host] = policy.dir_chain(host, root=root, trusted_uids=rules.trusted_uids)
        except policy.HostPathError as exc:
            problems.append(f"Mount source {host} cannot be mounted: {exc}")
            continue
        problems += policy.check_single_name(host, mounts)
        problems += policy.check_identity_against(host, chains[host], forbidden)
    try:
        workspace_chain = policy.dir_chain(rules.workspace_root)
    except policy.HostPathError:
        workspace_chain = None  # not made yet: nothing can lie inside it, and the names were checked
    for host, chain in chains.items():
        if workspace_chain and policy.same_folder_or_nested(chain, workspace_chain):
            problems.append(
                f"Mount source {host} is, contains or lies inside the workspace root {rules.workspace_root} (under another name)."
            )
    items = list(chains.items())
    for i, (host, chain) in enumerate(items):
        for other, other_chain in items[i + 1 :]:
            ro = {h: ro for h, _t, ro in extra_mounts}
            if policy.same_folder_or_nested(chain, other_chain) and not (ro[host] and ro[other]):
                problems.append(f"Mount sources {host} and {other} overlap and one of them is writable.")
    return chains, problems


def _overlapping_mounts(
    extra_mounts: Sequence[tuple[str, str, bool]], chains: dict, *, team_id: int, exclude: int | None = None
) -> list[str]:
    """Extra mounts that overlap a folder of a live sandbox: one of its extra mounts (unless both
    are read-only) or its own workspace folders, judged by name and by identity. Called with the
    `sandbox-mounts` lock held, so that two creates cannot both pass. Another team's sandbox and
    its folders are not named: its members alone may know them."""
    problems = []
    live = Sandbox.objects.exclude(status=S.DESTROYED).prefetch_related("mounts")
    if exclude is not None:
        live = live.exclude(pk=exclude)
    for host, _target, read_only in extra_mounts:
        chain = chains.get(host)
        for sandbox in live:
            recorded = sandbox.host_path_ids or {}
            for other in sandbox.mounts.all():
                other_chain = recorded.get(other.host_path)
                same = policy.overlaps(host, other.host_path) or (
                    chain is not None and other_chain and policy.same_folder_or_nested(chain, other_chain)
                )
                if same and not (read_only and other.read_only):
                    what = (
                        f"{other.host_path}, which sandbox {sandbox.name}"
                        if sandbox.team_id == team_id
                        else "a folder a sandbox of another team"
                    )
                    problems.append(
                        f"Mount source {host} overlaps {what} mounts; two sandboxes may share a folder only if both mount it read-only."
                    )
            if chain is not None:
                mounted = {p for p in recorded if p not in {m.host_path for m in sandbox.mounts.all()}}
                if any(policy.same_folder_or_nested(chain, recorded[p]) for p in mounted):
                    whose = f"sandbox {sandbox.name}" if sandbox.team_id == team_id else "a sandbox of another team"
                    problems.append(f"Mount source {host} is a folder of {whose} (under another name).")
    return problems


def _name_in_use(name: str) -> InvalidInput:
    """Names are unique across the panel (they name the host folder, the container and the home
    volume), so a name may be taken by another team's sandbox or by an earlier one's folder. One
    message for every case: it tells a member of another team no more than that the name is
    taken (not whose it is, nor where it lives on the host)."""
    return InvalidInput({"name": [f"The name {name!r} is in use (by a sandbox, or by what an earlier one left): pick another name."]})


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
    writable_root: bool = False,
    low_ports_and_ping: bool = False,
    runtime: str = Sandbox.Runtime.RUNC,
    selinux_level: str = "",
    egress_presets: Sequence[str] = (),
    egress_allow: str = "",
    disk_mb: int | None = None,
    host: str | None = None,
    host_labels: Sequence[str] = (),
    source_ip: str | None = None,
    enqueue: bool = True,
    claim_for: str = Sandbox.Action.START,
    audit_details: dict | None = None,
) -> Sandbox:
    """Record a new sandbox and enqueue its provisioning (folders, volume, container, start).

    Every rule is checked before anything is saved, so a refused sandbox leaves no row, folder
    or container behind: InvalidInput or PolicyViolation says why. A folder left by an earlier
    sandbox of the same name is never adopted. A restore into a new sandbox passes `claim_for`
    (the restore job) and queues its own task. NotQueued: recorded, but the queue refused its
    start (it is left in `error` with the reason).

    Placed on `host` (a host's name) when given, else on the enabled, non-draining host with the
    most free memory that has every label of `host_labels` (hosts.placement); judged again with
    the lock held (a host disabled or drained meanwhile takes no new sandbox)."""
    authorize(actor, team, Role.OPERATOR)
    name = name.strip() if isinstance(name, str) else name
    placed: HostRow | None = None
    try:
        placed = placement.place(memory_mb=memory_mb if isinstance(memory_mb, int) else 0, labels=host_labels, host_name=host)
    except placement.Unplaceable as exc:
        errors: dict[str, list[str]] = {"host": [str(exc)]}
    else:
        errors = {}
    on = engine.host_of(placed) if placed is not None else None
    errors.update(validate_settings(name=name, image=image, memory_mb=memory_mb, cpus=cpus, network_mode=network_mode, on=on))
    errors.update(validate_runtime(runtime, on=on))
    if selinux_level and (problems := policy.check_selinux_level(selinux_level, host_has_selinux=host_has_selinux())):
        errors["selinux_level"] = problems
    egress_presets = sorted(set(egress_presets))
    if allow_problems := allowlist_errors(egress_presets, egress_allow):
        errors["egress_allow"] = allow_problems
    # Its own quota, else its team's default, else the panel's.
    disk_mb = disk_mb or team_policy.default_disk_mb(team) or settings.SANDBOX_DEFAULT_DISK_MB
    if not settings.SANDBOX_MIN_DISK_MB <= disk_mb <= settings.SANDBOX_MAX_DISK_MB:
        errors["disk_mb"] = [f"The disk quota is from {settings.SANDBOX_MIN_DISK_MB} to {settings.SANDBOX_MAX_DISK_MB} MB."]
    if placed is not None and placed.agent and extra_mounts:
        # Judged here, on this machine's disk, they would be mounted from the agent's machine.
        errors.setdefault("host", []).append(f"Host {placed.name} is served by its agent: extra mounts are not offered there yet.")
    if errors or placed is None:  # placed is None only with errors["host"] saying why
        raise InvalidInput(errors)
    base = settings.WORKSPACE_ROOT / name
    if base.exists() or base.is_symlink():
        # Never adopted. Only the host's log names the folder: the form says what it says for
        # a live sandbox of any team.
        log.warning("sandbox name %r refused: %s exists (left by an earlier sandbox?)", name, base)
        raise _name_in_use(name)
    rules = policy_rules()
    chains, problems = _judge_extra_mounts(extra_mounts, rules)
    sandbox = Sandbox(
        name=name,
        team=team,
        host=placed,
        created_by=actor_user(actor),
        image=image,
        memory_mb=memory_mb,
        cpus=Decimal(str(cpus)),
        pids_limit=settings.SANDBOX_PIDS_LIMIT,
        network_mode=network_mode,
        egress_presets=egress_presets,
        egress_allow=(egress_allow or "").strip(),
        read_only_rootfs=not writable_root,
        low_ports_and_ping=low_ports_and_ping is True,
        runtime=runtime,
        selinux_level=selinux_level,
        status=S.CREATING,
        pending_action=claim_for,
        claimed_at=timezone.now(),
        uuid=uuidlib.uuid4(),
        host_path_ids={p: [list(pair) for pair in c] for p, c in chains.items()},
        disk_mb=disk_mb,
    )
    mounts = [Mount(host_path=h, container_path=c, read_only=ro) for h, c, ro in extra_mounts]
    problems += policy.check_config(sandbox_spec(sandbox, mounts), rules)
    if problems:
        raise policy.PolicyViolation(list(dict.fromkeys(problems)))
    queued = None
    try:
        with transaction.atomic():
            serialise("sandbox-mounts")
            if Sandbox.objects.exclude(status=S.DESTROYED).filter(name=name).exists():
                raise _name_in_use(name)
            if problems := _overlapping_mounts(extra_mounts, chains, team_id=team.pk):
                raise policy.PolicyViolation(problems)
            try:  # with the team's row locked: two creates cannot both take its last place
                team_policy.check_create(team=team, memory_mb=memory_mb, cpus=sandbox.cpus, disk_mb=disk_mb)
            except team_policy.OverLimit as exc:
                raise InvalidInput(exc.errors) from exc
            from storage.services import overcommit_problem

            if problem := overcommit_problem(disk_mb):
                raise InvalidInput({"disk_mb": [problem]})
            try:  # still enabled and not draining, now that nothing else changes it
                placement.place(memory_mb=memory_mb, labels=host_labels, host_name=placed.name)
            except placement.Unplaceable as exc:
                raise InvalidInput({"host": [str(exc)]}) from exc
            slot = warm.take(sandbox, mounts) if claim_for == Sandbox.Action.START else None
            sandbox.save()
            if slot is not None:
                WarmSlot.objects.filter(pk=slot.pk).update(sandbox=sandbox)
            for m in mounts:
                m.sandbox = sandbox
            Mount.objects.bulk_create(mounts)
            audit(
                actor,
                "sandbox.create",
                sandbox,
                {
                    "image": image,
                    "memory_mb": memory_mb,
                    "cpus": str(cpus),
                    "network": network_mode,
                    "read_only_root": not writable_root,
                    "low_ports_and_ping": sandbox.low_ports_and_ping,
                    "runtime": runtime,
                    "selinux_level": selinux_level,
                    "disk_mb": sandbox.disk_mb,
                    "host": placed.name,
                    "mounts": [str(m) for m in mounts],
                    **({"warm_slot": slot.key} if slot is not None else {}),
                    **(audit_details or {}),
                },
                source_ip,
            )
            if (
                enqueue and claim_for == Sandbox.Action.START
            ):  # queued first: on-commit callbacks run in order, and the task is what matters
                queued = enqueue_action(sandbox.pk, Sandbox.Action.START, S.CREATING)
            live.sandbox_changed(sandbox, created=True)
    except IntegrityError as exc:
        raise _name_in_use(name) from exc
    if queued is not None and queued.refused:
        raise NotQueued(Sandbox.Action.START, queued.refused)  # recorded, in `error` with the reason
    return sandbox


def sandbox_reapprove_folders(*, actor, sandbox: Sandbox) -> dict[str, dict]:
    """Record again what a stopped sandbox's folders are, for when they legitimately changed
    identity (a restore from a file-level backup, a file system whose device numbers changed at
    boot). Every rule of a create applies again: the folder must carry this sandbox's marker,
    no link on the way, nobody but root or the panel able to swap it, no overlap with another
    sandbox's mounts. Host-side only (`manage.py sandbox reapprove`), and audited."""
    authorize(actor, sandbox.team, Role.ADMIN)
    if sandbox.pending_action or sandbox.status not in (S.STOPPED, S.ERROR):
        raise InvalidInput({"": [f"{sandbox.name} must be stopped (it is {sandbox.status}) and idle."]})
    rules = policy_rules()
    if workspace.read_marker(sandbox.name) != str(sandbox.uuid):
        raise InvalidInput({"": [f"{sandbox.workspace_path} does not carry this sandbox's marker."]})
    chains: dict[str, tuple] = {}
    problems: list[str] = []
    for folder in workspace.FOLDERS:
        path = str(sandbox.workspace_path / folder)
        try:
            chains[path] = policy.dir_chain(path, root=rules.workspace_root, trusted_uids=rules.trusted_uids)
        except policy.HostPathError as exc:
            problems.append(f"{path} cannot be mounted: {exc}")
    mounts = [(m.host_path, m.container_path, m.read_only) for m in sandbox.mounts.all()]
    extra_chains, extra_problems = _judge_extra_mounts(mounts, rules)
    problems += extra_problems
    if problems:
        raise policy.PolicyViolation(problems)
    with transaction.atomic():
        serialise("sandbox-mounts")
        if problems := _overlapping_mounts(mounts, extra_chains, team_id=sandbox.team_id, exclude=sandbox.pk):
            raise policy.PolicyViolation(problems)
        before = sandbox.host_path_ids or {}
        recorded = {p: [list(pair) for pair in c] for p, c in {**chains, **extra_chains}.items()}
        Sandbox.objects.filter(pk=sandbox.pk, pending_action="").update(host_path_ids=recorded)
        changed = {p: {"was": before.get(p, [None])[-1], "now": c[-1]} for p, c in recorded.items() if before.get(p) != c}
        audit(actor, "sandbox.folders_reapproved", sandbox, {"changed": changed})
    return changed
