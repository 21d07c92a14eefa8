"""What a container may be: the allowlist's values, the installation's Rules, the ContainerSpec
that engine.create_container takes, and PolicyViolation."""

import re
from dataclasses import dataclass, field

from .. import seccomp

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
# The operating system's own folders: never mounted, never containing a mount, and a mount root
# may not lie inside them either.
SYSTEM_PATHS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",  # noqa: S108 - a host folder refused as a mount source, never written
    "/usr",
    "/var",
)
# Folders that hold other people's or other things' data: never mounted whole, nor anything
# containing them (a folder inside, say /srv/data, may be).
CONTAINER_PATHS = ("/", "/home", "/media", "/mnt", "/opt", "/srv")
NO_NEW_PRIVILEGES = "no-new-privileges:true"
ALLOWED_SECURITY_OPT = frozenset({NO_NEW_PRIVILEGES})
# An SELinux MLS/MCS level for the container's label (the original `manage.sh`'s
# "label=level:s0:c100,c200"): a sensitivity and at most a few categories, nothing else (no type
# or role change).
SELINUX_LEVEL_RE = re.compile(r"^s([0-9]|1[0-5])(-s([0-9]|1[0-5]))?(:c([0-9]{1,4})([.,]c[0-9]{1,4}){0,15})?$")


def selinux_level_option(level: str) -> str:
    return f"label=level:{level}"


def check_selinux_level(level: str, *, host_has_selinux: bool) -> list[str]:
    if not SELINUX_LEVEL_RE.fullmatch(level or "") or any(int(c) > 1023 for c in re.findall(r"c([0-9]+)", level)):
        return [f"SELinux level {level[:40]!r} is not valid: a sensitivity and categories such as s0:c100,c200."]
    if not host_has_selinux:
        return ["This machine has no SELinux: a label would not confine anything, so none is set."]
    return []


NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
IMAGE_RE = re.compile(
    r"^(?:[a-z0-9.-]+(?::[0-9]{1,5})?/)?[a-z0-9][a-z0-9._/-]{0,200}"  # [registry[:port]/]repository
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"  # [:tag][@digest]
)
USER_RE = re.compile(r"^([0-9]{1,10}):([0-9]{1,10})$")
HOSTNAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
WORKSPACE_TARGET = "/workspace"
EXTRA_TARGET_PARENTS = ("/workspace", "/mnt")
LABEL_UUID = "io.ccpanel.sandbox-uuid"
# Where Claude Code reads its managed settings on Linux: a team's policy is bind-mounted here,
# read-only, from a file the panel wrote under `Rules.managed_settings_root` (see
# sandboxes.managed_settings).
MANAGED_SETTINGS_TARGET = "/etc/claude-code/managed-settings.json"
# The two network sysctls Docker (20.10+) loosens in every container it starts: any user may
# bind a port below 1024 and open an ICMP echo ("ping") socket. A sandbox gets the kernel's own
# values unless it opted in, and then Docker's, stated explicitly: never "whatever the daemon sets".
PORT_START = "net.ipv4.ip_unprivileged_port_start"
PING_GROUPS = "net.ipv4.ping_group_range"
STRICT_SYSCTLS = {PORT_START: "1024", PING_GROUPS: "1 0"}
LOOSE_SYSCTLS = {PORT_START: "0", PING_GROUPS: "0 2147483647"}


def network_sysctls(*, low_ports_and_ping: bool = False) -> dict[str, str]:
    return dict(LOOSE_SYSCTLS if low_ports_and_ping else STRICT_SYSCTLS)


class PolicyViolation(Exception):
    """A spec the policy refuses; `problems` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class Rules:
    """What this installation allows, read from settings by the caller so that check() stays
    free of Django. `workspace_root` holds the sandboxes' own folders; `mount_roots` are where
    extra mounts may come from (validated at start-up by check_mount_roots). `homes` (resolved)
    and `protected` (the panel's own code, virtualenv and var/) may never be mounted.
    `trusted_uids` may own the folders between a root and a bind source (root and the panel)."""

    workspace_root: str
    mount_roots: tuple[str, ...]
    networks: tuple[str, ...]  # the panel's bridge; "none" is always allowed
    dns: tuple[str, ...] = ()  # the only name servers a container may be given (the panel's resolver)
    runtimes: tuple[str, ...] = ("runc", "runsc")
    security_opt: frozenset[str] = ALLOWED_SECURITY_OPT
    selinux: bool = False  # the host enforces SELinux: a container may carry a label level
    homes: tuple[str, ...] = ()
    protected: tuple[str, ...] = ()
    trusted_uids: frozenset[int] = frozenset({0})
    managed_settings_root: str = ""  # the only folder a managed-settings file may come from


@dataclass(frozen=True)
class BindMount:
    """A host folder mounted into the container. `chain` is the (device, inode) of every folder
    from / down to the source, recorded when the sandbox was created; `workspace` marks the
    sandbox's own folders, which live under the workspace root, as opposed to extra mounts,
    which never may."""

    source: str
    target: str
    read_only: bool = False
    chain: tuple[tuple[int, int], ...] | None = None
    workspace: bool = False

    @property
    def identity(self) -> tuple[int, int] | None:
        return self.chain[-1] if self.chain else None


@dataclass(frozen=True)
class VolumeMount:
    """A named volume (a sandbox's home). In the storage pool the volume is bound to `device`, a
    folder inside the sandbox's subvolume, judged like a workspace folder before every start
    (`chain`, recorded when it was made)."""

    name: str
    target: str
    device: str = ""
    chain: tuple[tuple[int, int], ...] | None = None

    def as_bind(self) -> "BindMount":
        return BindMount(self.device, self.target, False, self.chain, workspace=True)


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
    # The name servers Docker's embedded DNS forwards to (none: the host's). An allowlist sandbox
    # names the panel's resolver, so its queries leave from its own namespace, through the rules.
    dns: tuple[str, ...] = ()
    binds: tuple[BindMount, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    ports: tuple[PortBinding, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    hostname: str = ""
    cap_drop: tuple[str, ...] = ("ALL",)
    cap_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = (NO_NEW_PRIVILEGES, seccomp.option())
    privileged: bool = False
    devices: tuple[str, ...] = ()
    pid_mode: str | None = None
    ipc_mode: str | None = None
    uts_mode: str | None = None
    userns_mode: str | None = None
    runtime: str | None = None
    read_only_rootfs: bool = False
    # "sandbox": a sandbox's own container. "helper": a container that is created and never
    # started, only to reach a volume's files through the engine's archive API (backups and
    # restores of the home): no network, no host folder, a read-only root, one volume.
    profile: str = "sandbox"
    # Docker keeps the output in files of at most this size, this many of them: what the agent
    # prints can fill neither the host's disk nor a download's memory.
    log_max_size: str = "20m"
    log_max_files: int = 5
    # In-memory folders: (target, size in bytes). With a read-only root these are where programs
    # write their scratch files; always nosuid and nodev, and counted in the memory limit.
    tmpfs: tuple[tuple[str, int], ...] = ()
    # Resource limits per process (CIS Docker Benchmark 5.19): (name, soft, hard).
    ulimits: tuple[tuple[str, int, int], ...] = ()
    # Kernel settings of the container's own namespaces: only network_sysctls(), strict or opted in.
    sysctls: dict[str, str] = field(default_factory=network_sysctls)
    # A team's Claude Code policy: a file under Rules.managed_settings_root, mounted read-only on
    # MANAGED_SETTINGS_TARGET ("" for none).
    managed_settings: str = ""
