"""The security policy: one pure function that every container spec passes before Docker sees it.

`check()` is called for create, recreate and restore alike (engine.create_container calls it
itself, so no path can skip it). It collects every violation and raises them together, each as
a sentence a user can act on. Nothing here touches Docker or the database.
"""

import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
# Host directories that are never mounted, nor any folder that contains them.
PROTECTED_HOST_PATHS = (
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media", "/mnt",
    "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
    "/var/lib/docker", *DOCKER_SOCKETS,
)
ALLOWED_RUNTIMES = (None, "runc", "runsc")
UNCONFINED = ("seccomp=unconfined", "seccomp:unconfined", "apparmor=unconfined", "apparmor:unconfined",
              "label=disable", "label:disable")
NO_NEW_PRIVILEGES = "no-new-privileges:true"


class PolicyViolation(Exception):
    """A spec the policy refuses; `problems` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class BindMount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class VolumeMount:
    name: str
    target: str


@dataclass(frozen=True)
class PortBinding:
    container_port: int
    host_port: int
    host_ip: str = "127.0.0.1"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything the engine needs to create one sandbox container, as plain values."""

    name: str
    image: str
    memory_bytes: int
    nano_cpus: int
    pids_limit: int
    network: str  # a Docker network name, or "none"
    user: str = "1000:1000"
    binds: tuple[BindMount, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    ports: tuple[PortBinding, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    hostname: str = ""
    cap_drop: tuple[str, ...] = ("ALL",)
    cap_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = (NO_NEW_PRIVILEGES,)
    privileged: bool = False
    devices: tuple[str, ...] = ()
    pid_mode: str | None = None
    ipc_mode: str | None = None
    uts_mode: str | None = None
    userns_mode: str | None = None
    runtime: str | None = None
    read_only_rootfs: bool = False


def is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_host_path(source: str, *, allowed_roots: list[str]) -> list[str]:
    """Problems with mounting host folder `source`, judged on where it really points."""
    if not os.path.isabs(source):
        return [f"Mount source {source!r} must be an absolute path."]
    real = os.path.realpath(source)
    shown = source if real == source else f"{source} (resolves to {real})"
    # One reason per source, the most specific first: that is the one a user needs to read.
    if "docker.sock" in os.path.basename(real):
        return [f"Mount source {shown} is a Docker socket."]
    for protected in PROTECTED_HOST_PATHS:
        if real == protected or (protected != "/" and is_within(protected, real)):
            return [f"Mount source {shown} is or contains the system path {protected}."]
    home = os.path.realpath(os.path.expanduser("~"))
    if is_within(home, real) and not any(is_within(real, r) for r in allowed_roots):
        return [f"Mount source {shown} is or contains a home directory."]
    if not any(is_within(real, os.path.realpath(r)) for r in allowed_roots):
        return [f"Mount source {shown} is outside the allowed folders ({', '.join(allowed_roots)})."]
    return []


def check_container_path(target: str) -> list[str]:
    p = PurePosixPath(target)
    if not p.is_absolute() or ".." in p.parts:
        return [f"Mount target {target!r} must be an absolute path without '..'."]
    if not (is_within(str(p), "/workspace") or is_within(str(p), "/mnt")) or str(p) in ("/workspace", "/mnt"):
        return [f"Mount target {target} must be inside /workspace/ or /mnt/."]
    return []


def is_non_root(user: str) -> bool:
    """Docker's `user` field ("uid[:gid]" or a name) names someone other than root."""
    return user.split(":")[0].strip() not in ("", "0", "root")


def check(spec: ContainerSpec, *, allowed_roots: list[str]) -> None:
    """Raise PolicyViolation listing everything in `spec` that the security policy forbids."""
    problems: list[str] = []
    if NO_NEW_PRIVILEGES not in spec.security_opt:
        problems.append("no-new-privileges must be set.")
    if [c.upper() for c in spec.cap_drop] != ["ALL"] or spec.cap_add:
        problems.append("All capabilities must be dropped and none added.")
    if not is_non_root(spec.user):
        problems.append("The container must run as a non-root user.")
    if spec.memory_bytes <= 0 or spec.nano_cpus <= 0 or spec.pids_limit <= 0:
        problems.append("Memory, CPU and process limits are required.")
    if spec.privileged:
        problems.append("Privileged containers are not allowed.")
    if spec.network == "host":
        problems.append("The host network is not allowed.")
    for label, mode in (("PID", spec.pid_mode), ("IPC", spec.ipc_mode), ("UTS", spec.uts_mode),
                        ("user", spec.userns_mode)):
        if mode:
            problems.append(f"Sharing the {label} namespace ({mode}) is not allowed.")
    if spec.devices:
        problems.append("Host devices are not allowed.")
    if any(o.replace(" ", "").lower() in UNCONFINED for o in spec.security_opt):
        problems.append("seccomp, AppArmor and SELinux confinement may not be disabled.")
    if spec.runtime not in ALLOWED_RUNTIMES:
        problems.append(f"Runtime {spec.runtime!r} is not allowed.")
    for bind in spec.binds:
        problems += check_host_path(bind.source, allowed_roots=allowed_roots)
        problems += check_container_path(bind.target)
    for volume in spec.volumes:
        if not is_within(volume.target, "/home") or volume.target == "/home":
            problems.append(f"Volume {volume.name} may only be mounted on a home directory.")
    for port in spec.ports:
        if port.host_ip != "127.0.0.1":
            problems.append(f"Port {port.container_port} may only be published on 127.0.0.1.")
    if problems:
        raise PolicyViolation(problems)


def inspect_report(data: dict) -> list[tuple[str, bool, str]]:
    """(check, holds, what Docker says) for a container's `docker inspect` output: the policy
    read back from the running container, not from what the panel asked for."""
    host, config = data["HostConfig"], data["Config"]
    user = config.get("User") or "root"
    mounts = data.get("Mounts") or []
    namespaces = {k: host.get(k) or "" for k in ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode")}
    security = host.get("SecurityOpt") or []
    return [
        ("Runs as a non-root user", is_non_root(user), user),
        ("no-new-privileges", NO_NEW_PRIVILEGES in security, ", ".join(security) or "not set"),
        ("All capabilities dropped, none added", host.get("CapDrop") == ["ALL"] and not host.get("CapAdd"),
         f"drop {host.get('CapDrop')}, add {host.get('CapAdd') or []}"),
        ("Not privileged", not host.get("Privileged"), str(bool(host.get("Privileged")))),
        ("Memory limit", (host.get("Memory") or 0) > 0, f"{(host.get('Memory') or 0) >> 20} MB"),
        ("CPU limit", (host.get("NanoCpus") or 0) > 0, f"{(host.get('NanoCpus') or 0) / 1e9:g} CPUs"),
        ("Process limit", (host.get("PidsLimit") or 0) > 0, str(host.get("PidsLimit") or "none")),
        ("No host namespaces", "host" not in namespaces.values(), f"network {namespaces['NetworkMode']}"),
        ("No host devices", not host.get("Devices"), str(len(host.get("Devices") or []))),
        ("No Docker socket mounted", not any("docker.sock" in (m.get("Source") or "") for m in mounts), f"{len(mounts)} mounts"),
        ("imports is read-only", any(m.get("Destination") == "/workspace/imports" and not m.get("RW") for m in mounts), ""),
        ("No ports published beyond 127.0.0.1",
         all(b.get("HostIp") == "127.0.0.1" for bs in (host.get("PortBindings") or {}).values() for b in (bs or [])), ""),
    ]
