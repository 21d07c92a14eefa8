"""The container specs built from a sandbox's saved settings: the sandbox's own, and the
`helper` that backups and restores reach its home volume through; with the labels, mounts and
sizes they are made of."""

from decimal import Decimal

from django.conf import settings

from .. import engine, managed_settings, network, policy, seccomp, workspace
from ..models import Mount, Sandbox
from ..network import proxy_ca


def labels(sandbox: Sandbox) -> dict[str, str]:
    return engine.managed_labels(sandbox.name, str(sandbox.uuid))


def recorded_chain(sandbox: Sandbox, path: str) -> tuple[tuple[int, int], ...] | None:
    """The (device, inode) chain recorded for one of the sandbox's folders, from / down."""
    found = (sandbox.host_path_ids or {}).get(path)
    return tuple((int(pair[0]), int(pair[1])) for pair in found) if found else None


SECRETS_TMPFS_BYTES = 4 * 1024 * 1024


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
    from agents.services import telemetry_environment

    # Every container exports its agent's events (a warm slot's too: a team that records prompts
    # differs from the slot's, and starts cold); the audit trail is not a secret's to redirect.
    environment = {**environment, **telemetry_environment(sandbox)}
    if sandbox.network_mode == Sandbox.Network.ALLOWLIST:
        spec_labels[engine.LABEL_DNS] = "panel"
    # The team's Claude Code policy and the panel's telemetry: a change makes the container anew.
    settings_file, spec_labels[managed_settings.LABEL] = managed_settings.file_for(sandbox)
    # The credential proxy: its address and CA (sandboxes.network.proxy_ca), in internet and allowlist mode.
    environment.update(proxy_ca.environment(sandbox.network_mode))
    spec_labels.update(proxy_ca.labels(sandbox.network_mode))
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
            *((target, tmp_bytes(sandbox)) for target in ("/tmp", "/var/tmp")),  # noqa: S108 - the container's own, in memory
            ("/run/secrets", SECRETS_TMPFS_BYTES),
            *(((proxy_ca.DIR_IN_SANDBOX, proxy_ca.TMPFS_BYTES),) if proxy_ca.proxied(sandbox.network_mode) else ()),
        ),
        ulimits=(("nofile", settings.SANDBOX_NOFILE, settings.SANDBOX_NOFILE), ("nproc", settings.SANDBOX_NPROC, settings.SANDBOX_NPROC)),
        sysctls=policy.network_sysctls(low_ports_and_ping=sandbox.low_ports_and_ping),
        managed_settings=settings_file,
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
