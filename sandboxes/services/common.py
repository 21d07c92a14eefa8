"""What every sandbox service shares: its errors, its audit helper, the policy's rules and the
container spec built from a sandbox's saved settings."""

import os
import pwd
import sys
from decimal import Decimal

from django.conf import settings

from audit.services import audit_record
from teams.permissions import actor_name, actor_user

from .. import engine, network, policy, seccomp, workspace
from ..models import Mount, Sandbox


class SandboxError(Exception):
    """A request that cannot be carried out now; the message is shown to the user."""


class InvalidInput(SandboxError):
    """Input the rules refuse; `errors` maps a field name ("" for the whole form) to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__(" ".join(m for msgs in errors.values() for m in msgs))


class NotQueued(SandboxError):
    """The claim was taken, but the task queue refused its task: the claim was released at once
    with the reason (see claims.enqueue), and the caller must not say the action is under way."""

    def __init__(self, action: str, reason: str):
        self.action, self.reason = action, reason
        super().__init__(f"{action.capitalize()} was not started: {reason}. Retry when it is back.")


class LostClaim(Exception):
    """The action's claim was taken over (by Destroy) while it ran: stop, and undo what it made."""


def audit(actor, action: str, sandbox: Sandbox, details: dict | None = None, source_ip: str | None = None) -> None:
    """An audit event about `sandbox`, tied to its UUID and its team."""
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


def protected_folders(*, with_engine: bool = False) -> tuple[str, ...]:
    """The panel's own folders (its code, its virtualenv and var/: keys, database, Redis; the
    backups and the evidence), and,
    with_engine, the Docker engine's data (every sandbox's home volume is there)."""
    found: list[str] = [str(settings.BASE_DIR), str(settings.VAR_DIR), sys.prefix, str(settings.BACKUP_ROOT), str(settings.EVIDENCE_ROOT)]
    if with_engine and (data_root := engine.engine_for().data_root()):
        found.append(data_root)
    return tuple(dict.fromkeys(os.path.realpath(p) for p in found))


def policy_rules() -> policy.Rules:
    """The installation's policy, from settings: the one place that reads the allowed roots."""
    return policy.Rules(
        workspace_root=str(settings.WORKSPACE_ROOT),
        mount_roots=tuple(str(r) for r in settings.SANDBOX_MOUNT_ROOTS),
        networks=network.networks(),
        dns=(network.allow_gateway(),),
        runtimes=tuple(settings.SANDBOX_RUNTIMES),
        homes=tuple(policy.real_homes(entry.pw_dir for entry in pwd.getpwall())),
        protected=protected_folders(with_engine=True),
        trusted_uids=frozenset({0, os.geteuid()}),
        selinux=host_has_selinux(),
    )


def host_has_selinux() -> bool:
    """SELinux is enforcing on this machine (a label level then means something)."""
    try:
        with open("/sys/fs/selinux/enforce") as fh:
            return fh.read().strip() == "1"
    except OSError:
        return False


def labels(sandbox: Sandbox) -> dict[str, str]:
    return engine.managed_labels(sandbox.name, str(sandbox.uuid))


def recorded_chain(sandbox: Sandbox, path: str) -> tuple[tuple[int, int], ...] | None:
    """The (device, inode) chain recorded for one of the sandbox's folders, from / down."""
    found = (sandbox.host_path_ids or {}).get(path)
    return tuple((int(pair[0]), int(pair[1])) for pair in found) if found else None


SECRETS_TMPFS_BYTES = 4 * 1024 * 1024


def ensure_network_of(docker, mode: str) -> None:
    """Make the network of `mode` (on its bridge, in its subnet) if it is missing; none for `none`."""
    if (bridge := network.bridge_of(mode)) is not None:
        docker.ensure_network(bridge.network, subnet=bridge.subnet, bridge=bridge.bridge)


def sandbox_spec(sandbox: Sandbox, extra_mounts: list[Mount] | None = None, *, secrets: bool = True) -> policy.ContainerSpec:
    """The container spec for `sandbox`, built only from its saved settings."""
    base = sandbox.workspace_path
    mounts = extra_mounts if extra_mounts is not None else list(sandbox.mounts.all())
    binds = [
        policy.BindMount(str(base / f), f"/workspace/{f}", ro, recorded_chain(sandbox, str(base / f)), workspace=True)
        for f, ro in workspace.FOLDERS.items()
    ]
    binds += [policy.BindMount(m.host_path, m.container_path, m.read_only, recorded_chain(sandbox, m.host_path)) for m in mounts]
    environment: dict[str, str] = {}
    spec_labels = labels(sandbox)
    if sandbox.pk and secrets:  # a sandbox being judged before it is saved has no secrets yet
        from ..secrets import LABEL_SECRETS, container_environment

        environment, spec_labels[LABEL_SECRETS] = container_environment(sandbox)
    if sandbox.network_mode == Sandbox.Network.ALLOWLIST:
        spec_labels[engine.LABEL_DNS] = "panel"
    return policy.ContainerSpec(
        name=sandbox.container_name,
        image=sandbox.image,
        memory_bytes=sandbox.memory_mb * 1024 * 1024,
        nano_cpus=int(Decimal(sandbox.cpus) * 1_000_000_000),
        pids_limit=sandbox.pids_limit,
        network=network.network_of(sandbox.network_mode),
        dns=(network.allow_gateway(),) if sandbox.network_mode == Sandbox.Network.ALLOWLIST else (),
        user=f"{settings.SANDBOX_UID}:{settings.SANDBOX_GID}",
        binds=tuple(binds),
        volumes=(home_volume(sandbox),),
        labels=spec_labels,
        environment=environment,
        hostname=sandbox.name,
        runtime=sandbox.runtime or "runc",
        log_max_size=settings.SANDBOX_LOG_MAX_SIZE,
        log_max_files=settings.SANDBOX_LOG_MAX_FILES,
        read_only_rootfs=sandbox.read_only_rootfs,
        security_opt=(
            policy.NO_NEW_PRIVILEGES,
            seccomp.option(),
            *((policy.selinux_level_option(sandbox.selinux_level),) if sandbox.selinux_level else ()),
        ),
        tmpfs=(
            *((target, tmp_bytes(sandbox)) for target in ("/tmp", "/var/tmp")),
            ("/run/secrets", SECRETS_TMPFS_BYTES),
        ),
        ulimits=(("nofile", settings.SANDBOX_NOFILE, settings.SANDBOX_NOFILE), ("nproc", settings.SANDBOX_NPROC, settings.SANDBOX_NPROC)),
        sysctls=policy.network_sysctls(low_ports_and_ping=sandbox.low_ports_and_ping),
    )


def helper_spec(sandbox: Sandbox) -> policy.ContainerSpec:
    """The `helper` profile for `sandbox`: a container created from its image and never started,
    holding only its home volume, through which backups read and restores write the home."""
    return policy.ContainerSpec(
        name=f"{sandbox.container_name}-helper",
        image=sandbox.image,
        memory_bytes=64 * 1024 * 1024,
        nano_cpus=250_000_000,
        pids_limit=16,
        network="none",
        user=f"{settings.SANDBOX_UID}:{settings.SANDBOX_GID}",
        volumes=(home_volume(sandbox),),
        labels={**labels(sandbox), engine.LABEL_HELPER: "true"},
        runtime="runc",
        read_only_rootfs=True,
        profile="helper",
    )


def tmp_bytes(sandbox: Sandbox) -> int:
    """The size of each of /tmp and /var/tmp. They are in memory and count against the memory
    limit, so together they take at most half of it: a sandbox that fills both still has half
    its memory for its processes (and for the `rm` that cleans up), instead of every later
    process being killed while it looks "running"."""
    return min(settings.SANDBOX_TMP_MB, max(sandbox.memory_mb // 4, 1)) * 1024 * 1024


def home_volume(sandbox: Sandbox) -> policy.VolumeMount:
    """The sandbox's home volume; in the storage pool, bound to its home folder there."""
    if not sandbox.in_pool:
        return policy.VolumeMount(sandbox.volume_name, home_target())
    device = str(sandbox.home_path)
    return policy.VolumeMount(sandbox.volume_name, home_target(), device, recorded_chain(sandbox, device))


def home_target() -> str:
    return f"/home/{settings.SANDBOX_USER}"
