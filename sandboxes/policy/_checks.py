"""check(): a spec's values against the Rules (check_config) and its bind sources as they are on
disk now (check_host_paths)."""

import os
import stat
from collections.abc import Sequence

from .. import seccomp
from ._paths import (
    check_container_path,
    check_extra_source_lexically,
    check_host_paths,
    check_image_ref,
    is_normalised,
    is_within,
    overlaps,
)
from ._spec import (
    ENV_NAME_RE,
    HOSTNAME_RE,
    LABEL_UUID,
    LOOSE_SYSCTLS,
    PING_GROUPS,
    PORT_START,
    STRICT_SYSCTLS,
    USER_RE,
    WORKSPACE_TARGET,
    ContainerSpec,
    PolicyViolation,
    Rules,
    check_selinux_level,
)

# --- the spec ------------------------------------------------------------------------------------


def check_config(spec: ContainerSpec, rules: Rules) -> list[str]:
    """Everything about `spec` that can be judged from its values alone."""
    problems: list[str] = []
    problems += check_image_ref(spec.image)
    labels_set = [o for o in spec.security_opt if o.startswith("label=level:")]
    other_opts = [o for o in spec.security_opt if not o.startswith("label=level:")]
    for option in labels_set:
        problems += check_selinux_level(option.removeprefix("label=level:"), host_has_selinux=rules.selinux)
    if len(labels_set) > 1:
        problems.append("At most one SELinux level.")
    # A sandbox also carries the panel's seccomp profile (sandboxes.seccomp): Docker's default,
    # less the btrfs ioctls. A helper is never started: no-new-privileges alone.
    required = set(rules.security_opt) | {seccomp.option()}
    helper_may = spec.profile != "sandbox" and set(other_opts) == set(rules.security_opt)
    if (set(other_opts) != required and not helper_may) or len(other_opts) != len(set(other_opts)):
        problems.append(
            "Security options must be exactly no-new-privileges and the panel's seccomp profile "
            "(seccomp, AppArmor and SELinux confinement may not be changed or switched off)."
        )
    if list(spec.cap_drop) != ["ALL"] or spec.cap_add:
        problems.append("All capabilities must be dropped and none added.")
    user = USER_RE.fullmatch(spec.user or "")
    if not user or int(user.group(1)) == 0 or int(user.group(2)) == 0:
        problems.append("The container must run as a non-root user, given as a non-zero uid:gid.")
    if spec.memory_bytes <= 0 or spec.nano_cpus <= 0 or spec.pids_limit <= 0:
        problems.append("Memory, CPU and process limits are required.")
    if spec.privileged:
        problems.append("Privileged containers are not allowed.")
    if spec.network != "none" and spec.network not in rules.networks:
        problems.append(f"Network {spec.network!r} is not allowed: only the panel's own bridge or none.")
    if any(server not in rules.dns for server in spec.dns):
        problems.append(f"Name servers {', '.join(spec.dns)} are not allowed: only the panel's own resolver.")
    for label, mode in (("PID", spec.pid_mode), ("IPC", spec.ipc_mode), ("UTS", spec.uts_mode), ("user", spec.userns_mode)):
        if mode:
            problems.append(f"Sharing the {label} namespace ({mode}) is not allowed.")
    if spec.devices:
        problems.append("Host devices are not allowed.")
    if spec.runtime not in rules.runtimes:  # never None: that would be whatever the daemon's default is
        problems.append(f"Runtime {spec.runtime!r} is not allowed (only {', '.join(rules.runtimes)}).")
    if spec.hostname and not HOSTNAME_RE.fullmatch(spec.hostname):
        problems.append(f"Hostname {spec.hostname!r} is not valid.")
    for name, value in spec.environment.items():
        if not ENV_NAME_RE.fullmatch(name) or "\x00" in str(value):
            problems.append(f"Environment variable {name[:40]!r} is not valid.")
    problems += _check_mount_layout(spec, rules)
    problems += _check_managed_settings(spec, rules)
    problems += _check_profile(spec)
    for target, size in spec.tmpfs:
        if target not in TMPFS_TARGETS or not 0 < size <= spec.memory_bytes:
            problems.append(f"An in-memory folder may only be one of {', '.join(TMPFS_TARGETS)}, no larger than the memory limit.")
    for name, soft, hard in spec.ulimits:
        if name not in ULIMITS or not 0 < soft <= hard:
            problems.append(f"Limit {name!r} is not allowed (only {', '.join(ULIMITS)}, soft no higher than hard).")
    for port in spec.ports:
        if port.host_ip != "127.0.0.1":
            problems.append(f"Port {port.container_port} may only be published on 127.0.0.1.")
    if spec.sysctls not in (STRICT_SYSCTLS, LOOSE_SYSCTLS):
        problems.append(
            f"Kernel settings must be exactly {PORT_START} and {PING_GROUPS}, refusing or (opted in) allowing low ports and ping."
        )
    return problems


PROFILES = ("sandbox", "helper")
TMPFS_TARGETS = ("/tmp", "/var/tmp", "/run/secrets", "/run/ccpanel")  # noqa: S108 - in-memory folders inside the container, not files the panel writes
TMPFS_OPTIONS = "rw,nosuid,nodev"
ULIMITS = ("nofile", "nproc", "core")


def _check_profile(spec: ContainerSpec) -> list[str]:
    if spec.profile not in PROFILES:
        return [f"Unknown container profile {spec.profile!r}."]
    if spec.profile == "helper" and (
        spec.network != "none" or spec.binds or spec.ports or spec.environment or not spec.read_only_rootfs or len(spec.volumes) != 1
    ):
        return ["A helper container has no network, no host folder, no port and no environment, a read-only root, and one volume."]
    return []


def _check_mount_layout(spec: ContainerSpec, rules: Rules) -> list[str]:
    problems: list[str] = []
    uuid = spec.labels.get(LABEL_UUID, "")
    targets: list[str] = []
    for bind in spec.binds:
        if bind.workspace:
            if not is_normalised(bind.source) or not is_within(bind.source, rules.workspace_root) or bind.source == rules.workspace_root:
                problems.append(f"Workspace folder {bind.source} must lie inside {rules.workspace_root}.")
            if not is_within(bind.target, WORKSPACE_TARGET) or not is_normalised(bind.target):
                problems.append(f"Workspace folder target {bind.target} must be inside /workspace/.")
        else:
            problems += check_extra_source_lexically(bind.source, rules)
            problems += check_container_path(bind.target)
        targets.append(bind.target)
    for volume in spec.volumes:
        if not volume.target.startswith("/home/") or not is_normalised(volume.target) or volume.target.count("/") != 2:
            problems.append(f"Volume {volume.name} may only be mounted on a home directory (/home/<user>).")
        if not uuid or uuid not in volume.name:
            problems.append(f"Volume {volume.name} does not belong to this sandbox.")
        if volume.device and (
            not is_normalised(volume.device) or not is_within(volume.device, rules.workspace_root) or volume.device == rules.workspace_root
        ):
            problems.append(f"Volume {volume.name} may only be bound to a folder inside {rules.workspace_root}.")
        targets.append(volume.target)
    for i, target in enumerate(targets):
        for other in targets[i + 1 :]:
            if overlaps(target, other):
                problems.append(f"Mount targets {target} and {other} overlap; each target must be unique and not nested.")
    extra = [b for b in spec.binds if not b.workspace]
    for i, bind in enumerate(extra):
        for other_bind in extra[i + 1 :]:
            if overlaps(bind.source, other_bind.source) and not (bind.read_only and other_bind.read_only):
                problems.append(f"Mount sources {bind.source} and {other_bind.source} overlap and one of them is writable.")
    return problems


def _check_managed_settings(spec: ContainerSpec, rules: Rules) -> list[str]:
    """A team's managed-settings file: only a sandbox's, only a file directly inside the panel's
    own folder for them (never a path a user named)."""
    path = spec.managed_settings
    if not path:
        return []
    root = rules.managed_settings_root
    if spec.profile != "sandbox" or not root or not is_normalised(path) or os.path.dirname(path) != root:
        return [f"The managed-settings file {path[:200]!r} must lie directly inside the panel's folder for them."]
    return []


def check_managed_settings_file(path: str, rules: Rules) -> list[str]:
    """The managed-settings file as it is on disk now: a regular file reached by no link, owned
    by root or the panel, writable by no one else."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        return [f"The managed-settings file {path} cannot be read: {exc.strerror}."]
    if os.path.realpath(path) != path or not stat.S_ISREG(info.st_mode):
        return [f"The managed-settings file {path} is not a plain file (a link, or something else)."]
    if info.st_uid not in rules.trusted_uids or info.st_mode & 0o022:
        return [f"The managed-settings file {path} may be changed by someone other than root or the panel."]
    return []


def same_folder_or_nested(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> bool:
    """Whether two folders, given as recorded chains, are the same or one lies inside the other,
    judged by identity rather than by name (a second name for a folder does not hide it)."""
    a_ids, b_ids = {tuple(x) for x in a}, {tuple(x) for x in b}
    return tuple(a[-1]) in b_ids or tuple(b[-1]) in a_ids


def check(spec: ContainerSpec, rules: Rules) -> None:
    """Raise PolicyViolation listing everything in `spec` that the security policy forbids,
    judging its host folders as they are on disk at this moment."""
    problems = check_config(spec, rules)
    if not problems:
        problems = check_host_paths(spec, rules)
    if not problems and spec.managed_settings:
        problems = check_managed_settings_file(spec.managed_settings, rules)
    if problems:
        raise PolicyViolation(problems)


def is_non_root(user: str) -> bool:
    """Docker's `user` field names someone other than root: a uid:gid with neither zero."""
    match = USER_RE.fullmatch(user or "")
    return match is not None and int(match.group(1)) != 0 and int(match.group(2)) != 0
