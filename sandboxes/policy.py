"""The security policy: every container spec passes `check()` before Docker sees it.

The policy is an allowlist. Each field of a ContainerSpec must hold one of the values listed
here; anything else is refused, with every reason listed as a sentence a user can act on.

`check()` has two halves:
- `check_config()` is pure: it judges the spec's values against the installation's Rules.
- `check_host_paths()` judges every bind source *as it is on disk now*: no symbolic link in any
  component (each one is opened with O_NOFOLLOW, from / down), a directory, inside the allowed
  roots, and the same device and inode as recorded when the sandbox was created. Docker resolves
  a bind source again every time it starts a container, so this half runs right before every
  create and every start (see services.actions), not once at create. It only reads the host.

engine.create_container calls `check()` itself, so no path to Docker can skip it.
"""

import errno
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import seccomp

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
    "/tmp",
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


# --- paths, lexically ----------------------------------------------------------------------------


def is_within(path: str, root: str) -> bool:
    """`path` is `root` or lies inside it (both absolute and normalised)."""
    return path == root or root == "/" or path.startswith(root.rstrip("/") + "/")


def overlaps(a: str, b: str) -> bool:
    """One of the two folders is, contains or lies inside the other."""
    return is_within(a, b) or is_within(b, a)


def is_normalised(path: str) -> bool:
    return path.startswith("/") and os.path.normpath(path) == path and not path.startswith("//")


def check_name(name: str) -> list[str]:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        return ["Name: use 1-40 lower-case letters, digits or hyphens, starting and ending with a letter or digit."]
    return []


def check_image_ref(image: str) -> list[str]:
    if not isinstance(image, str) or len(image) > 255 or not IMAGE_RE.fullmatch(image) or "//" in image or ".." in image:
        return [f"Image: {str(image)[:80]!r} is not a valid image reference."]
    return []


def check_container_path(target: str) -> list[str]:
    """An extra mount's target: normalised, absolute, strictly inside /workspace/ or /mnt/."""
    if not isinstance(target, str) or "\x00" in target or not is_normalised(target):
        return [f"Mount target {target!r} must be a normalised absolute path (no '..', '.', '//' or trailing '/')."]
    if not any(is_within(target, p) and target != p for p in EXTRA_TARGET_PARENTS):
        return [f"Mount target {target} must be inside /workspace/ or /mnt/."]
    return []


def check_extra_source_lexically(source: str, rules: Rules) -> list[str]:
    """Where an extra mount's source may lie, judged on the path as written."""
    if not isinstance(source, str) or "\x00" in source or not is_normalised(source):
        return [f"Mount source {source!r} must be a normalised absolute path."]
    if not rules.mount_roots:
        return [f"Mount source {source}: extra mounts are off (no SANDBOX_MOUNT_ROOTS are configured)."]
    if overlaps(source, rules.workspace_root):
        return [f"Mount source {source} is, contains or lies inside the workspace root {rules.workspace_root}."]
    for protected in (*SYSTEM_PATHS, *DOCKER_SOCKETS):
        if overlaps(source, protected):
            return [f"Mount source {source} is, contains or lies inside the system path {protected}."]
    for protected in CONTAINER_PATHS:
        if is_within(protected, source):
            return [f"Mount source {source} is or contains {protected}."]
    for protected in rules.protected:
        if overlaps(source, protected):
            return [f"Mount source {source} is, contains or lies inside the panel's own {protected}."]
    for home in rules.homes:
        if home != "/" and overlaps(source, home):
            return [f"Mount source {source} is, contains or lies inside the home directory {home}."]
    if not any(is_within(source, r) for r in rules.mount_roots):
        return [f"Mount source {source} is outside the allowed folders ({', '.join(rules.mount_roots)})."]
    return []


def real_homes(homes: Iterable[str]) -> list[str]:
    """Home directories as they really are (a home reached through a link is judged at its target)."""
    found = []
    for home in homes:
        if home and os.path.isabs(home):
            for form in {os.path.normpath(home), os.path.realpath(home)}:
                if form != "/" and form not in found:
                    found.append(form)
    return found


def check_mount_roots(roots: Sequence[str], *, workspace_root: str, homes: Iterable[str], protected: Iterable[str] = ()) -> list[str]:
    """Problems with the configured SANDBOX_MOUNT_ROOTS: a root may not be, contain or lie inside
    a system path, a home directory (from the password database, resolved), the workspace root
    or the panel's own folders (its code, virtualenv and var/)."""
    problems = []
    homes = real_homes(homes)
    protected = list(protected)
    for root in roots:
        if not is_normalised(root) or root == "/":
            problems.append(f"SANDBOX_MOUNT_ROOTS: {root!r} must be a normalised absolute path other than /.")
            continue
        reasons = [f"the system path {p}" for p in (*SYSTEM_PATHS, *DOCKER_SOCKETS) if overlaps(root, p)]
        reasons += [f"{p}" for p in CONTAINER_PATHS if p != "/" and is_within(p, root)]
        reasons += [f"the home directory {h}" for h in homes if overlaps(root, os.path.normpath(h))]
        if overlaps(root, workspace_root):
            reasons.append(f"the workspace root {workspace_root}")
        reasons += [f"the panel's own {p}" for p in protected if overlaps(root, p)]
        if reasons:
            problems.append(
                f"SANDBOX_MOUNT_ROOTS: {root} is, contains or lies inside {reasons[0]}; name a folder of its own for sandboxes to share."
            )
    return problems


def check_workspace_root(root: str, *, homes: Iterable[str]) -> list[str]:
    """Problems with WORKSPACE_ROOT: it may lie inside a home directory (the default is
    ~/ClaudeCodeWorkspace) but may not be or contain a system path or anyone's home."""
    if not is_normalised(root):
        return [f"WORKSPACE_ROOT: {root!r} must be a normalised absolute path."]
    inside = [p for p in (*SYSTEM_PATHS, *DOCKER_SOCKETS, *CONTAINER_PATHS) if is_within(p, root)]
    inside += [h for h in real_homes(homes) if is_within(h, root)]
    if inside:
        return [f"WORKSPACE_ROOT: {root} is or contains {inside[0]}; name a folder of its own for the sandboxes."]
    return []


# --- paths, on disk ------------------------------------------------------------------------------


class HostPathError(Exception):
    """A host folder that may not be mounted as it is on disk now."""


def open_dir_nofollow(path: str, *, flags: int = os.O_PATH) -> int:
    """Open the directory `path` component by component from /, never following a symbolic
    link (O_NOFOLLOW at every step). Returns the fd (the caller closes it)."""
    if not is_normalised(path):
        raise HostPathError(f"{path!r} is not a normalised absolute path.")
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    walked = ""
    try:
        parts = [p for p in path.split("/") if p]
        for i, part in enumerate(parts):
            walked += "/" + part
            last = i == len(parts) - 1
            try:
                nxt = os.open(part, (flags if last else os.O_PATH) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise HostPathError(_describe(walked, part, fd, exc)) from None
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def _describe(walked: str, part: str, parent_fd: int, exc: OSError) -> str:
    try:
        st = os.lstat(part, dir_fd=parent_fd)
    except OSError:
        return f"{walked} does not exist."
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(part, dir_fd=parent_fd)
        except OSError:
            target = "?"
        return f"{walked} is a symbolic link (to {target}); links are never mounted."
    if not stat.S_ISDIR(st.st_mode):
        return f"{walked} is not a folder."
    if exc.errno == errno.EACCES:
        return f"{walked} cannot be read by the panel."
    return f"{walked}: {exc.strerror}."


def _root_of(path: str, roots: Iterable[str]) -> str | None:
    """The deepest of `roots` that `path` lies inside."""
    inside = [r for r in roots if is_within(path, r)]
    return max(inside, key=len) if inside else None


def dir_chain(path: str, *, root: str | None = None, trusted_uids: Iterable[int] = (0,)) -> tuple[tuple[int, int], ...]:
    """(device, inode) of every folder from / down to `path`, walked without following any link.

    With `root` (the allowed root `path` lies in), also judge who could swap the folder between
    this check and Docker's mount: every folder from `root` down to the parent of `path` must be
    owned by one of `trusted_uids` and writable by its owner only, and no folder above `root` may
    be writable by its group or others, unless it is sticky (like /tmp) and both it and the
    entry on the way belong to `trusted_uids`: then nobody else may rename that entry. Raises
    HostPathError saying which folder fails."""
    fd = open_dir_nofollow("/")
    chain = []
    try:
        st = os.fstat(fd)
        chain.append((st.st_dev, st.st_ino))
        walked = ""
        trusted = set(trusted_uids)
        for part in [p for p in path.split("/") if p]:
            parent, parent_st = walked or "/", st
            walked += "/" + part
            try:
                nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise HostPathError(_describe(walked, part, fd, exc)) from None
            os.close(fd)
            fd = nxt
            st = os.fstat(fd)
            if root is not None:
                _judge_parent(parent, parent_st, st, below_root=is_within(parent, root), trusted=trusted)
            chain.append((st.st_dev, st.st_ino))
        return tuple(chain)
    finally:
        os.close(fd)


def _judge_parent(path: str, st: os.stat_result, child: os.stat_result, *, below_root: bool, trusted: set[int]) -> None:
    if below_root and st.st_uid not in trusted:
        raise HostPathError(
            f"{path} belongs to uid {st.st_uid}, who could swap a folder inside it between the check "
            "and Docker's mount; folders on the way to a mount must belong to root or the panel."
        )
    if st.st_mode & 0o022:
        # The sticky bit lets only an entry's owner (or the folder's) rename it: safe when both are trusted.
        if st.st_mode & stat.S_ISVTX and st.st_uid in trusted and child.st_uid in trusted:
            return
        raise HostPathError(
            f"{path} is writable by its group or by others, who could swap a folder inside it "
            "for a link between the check and Docker's mount; make it writable by its owner only."
        )


def dir_identity(path: str) -> tuple[int, int]:
    """(device, inode) of the folder `path`, reached without following any link."""
    return dir_chain(path)[-1]


@dataclass(frozen=True)
class MountEntry:
    point: str  # where it is mounted
    root: str  # which folder of its file system it shows
    device: str  # major:minor of that file system


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """Every mount of this machine. Raises HostPathError if that cannot be read: the checks that
    need it must not pass for want of it."""
    try:
        with open(path) as f:
            return [MountEntry(_unescape(fields[4]), _unescape(fields[3]), fields[2]) for fields in (line.split() for line in f)]
    except (OSError, IndexError) as exc:
        raise HostPathError(f"the list of mounts ({path}) cannot be read: {exc}") from None


def _unescape(field_text: str) -> str:
    """mountinfo writes a space as \\040, a tab as \\011, a backslash as \\134."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def check_single_name(source: str, mounts: list[MountEntry]) -> list[str]:
    """An extra mount's folder must have one name only. A file system mounted twice, or a bind
    mount of a folder, makes a second path to the same folder, which the checks by name cannot
    see through: refused when another mount of the same file system also shows this folder. (A
    btrfs subvolume mounted at /, which shows a sub-folder of its file system, is one name.)"""
    inside = [m for m in mounts if is_within(source, m.point)]
    if not inside:
        return []
    on = max(inside, key=lambda m: len(m.point))
    rest = source[len(on.point) :].lstrip("/") if on.point != "/" else source.lstrip("/")
    folder = os.path.normpath(on.root.rstrip("/") + "/" + rest) if rest else on.root
    for other in mounts:
        if other is not on and other.device == on.device and is_within(folder, other.root):
            alias = os.path.normpath(other.point.rstrip("/") + "/" + folder[len(other.root) :].lstrip("/"))
            return [
                f"Mount source {source} is the same folder as {alias} (its file system is mounted twice); "
                "one folder may have one name only."
            ]
    return []


def forbidden_chains(rules: Rules) -> list[tuple[str, tuple[tuple[int, int], ...], bool]]:
    """(label, chain, whether only containing it is refused) for every folder an extra mount may
    never be, contain or lie inside, judged by identity: system folders, homes, the panel's own
    folders and Docker's, the workspace. Folders that do not exist are left out."""
    found = []
    for label, paths, contain_only in (
        ("the system path", (*SYSTEM_PATHS,), False),
        ("the home directory", rules.homes, False),
        ("the panel's own", rules.protected, False),
        ("the workspace root", (rules.workspace_root,), False),
        ("", CONTAINER_PATHS, True),
    ):
        for path in paths:
            try:
                found.append((f"{label} {path}".strip(), dir_chain(path), contain_only))
            except HostPathError:
                continue
    return found


def check_identity_against(source: str, chain: Sequence[Sequence[int]], forbidden) -> list[str]:
    """The source, by identity, against forbidden_chains(): a second name for a home or a system
    folder is refused like the folder itself."""
    ids = {tuple(x) for x in chain}
    for label, other, contain_only in forbidden:
        contains = tuple(chain[-1]) in {tuple(x) for x in other}
        inside = tuple(other[-1]) in ids
        if contains or (inside and not contain_only):
            return [f"Mount source {source} is, contains or lies inside {label} (under another name)."]
    return []


def check_host_paths(spec: ContainerSpec, rules: Rules) -> list[str]:
    """Judge every bind source as it is on disk now (see the module docstring): no link on the
    way, nobody but root or the panel able to swap it, no bind mount under it, and every folder
    from / down to it the very one recorded when the sandbox was created."""
    problems: list[str] = []
    extra = [b for b in spec.binds if not b.workspace]
    try:
        mounts = read_mountinfo() if extra else []
        forbidden = forbidden_chains(rules) if extra else []
    except HostPathError as exc:
        return [f"Extra mounts cannot be judged: {exc}"]
    for bind in (*spec.binds, *(v.as_bind() for v in spec.volumes if v.device)):
        root = rules.workspace_root if bind.workspace else _root_of(bind.source, rules.mount_roots)
        try:
            chain = dir_chain(bind.source, root=root, trusted_uids=rules.trusted_uids)
        except HostPathError as exc:
            problems.append(f"Mount source {bind.source} cannot be mounted: {exc}")
            continue
        if not bind.workspace:
            problems += check_single_name(bind.source, mounts)
            problems += check_identity_against(bind.source, chain, forbidden)
        if not bind.chain:
            problems.append(f"Mount source {bind.source} has no recorded identity; it was never checked at create.")
        elif tuple(map(tuple, bind.chain)) != chain:
            was, now = bind.chain[-1], chain[-1]
            problems.append(
                f"Mount source {bind.source} (or a folder on its way) was replaced since the sandbox was "
                f"created (device/inode {was[0]}/{was[1]}, now {now[0]}/{now[1]})."
            )
    return problems


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
TMPFS_TARGETS = ("/tmp", "/var/tmp", "/run/secrets")
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
    if problems:
        raise PolicyViolation(problems)


def is_non_root(user: str) -> bool:
    """Docker's `user` field names someone other than root: a uid:gid with neither zero."""
    match = USER_RE.fullmatch(user or "")
    return match is not None and int(match.group(1)) != 0 and int(match.group(2)) != 0


# --- reading a container back ----------------------------------------------------------------------


def inspect_report(data: dict, spec: ContainerSpec | None = None, processes: list[dict] | None = None) -> list[tuple[str, bool, str]]:
    """(check, holds, what Docker says) for a container's `docker inspect` output: the policy
    read back from the running container, not from what the panel asked for. With `spec`, the
    container is also compared with the sandbox's saved settings; with `processes` (see
    engine.process_privileges), every process inside is checked for capabilities and root."""
    host, config = data["HostConfig"], data["Config"]
    user = config.get("User") or "root"
    mounts = data.get("Mounts") or []
    namespaces = {k: host.get(k) or "" for k in ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode")}
    security = host.get("SecurityOpt") or []
    named = [
        o if not o.startswith("seccomp=") else ("seccomp=the panel's profile" if o == seccomp.option() else "seccomp=another profile")
        for o in security
    ]
    report = [
        ("Runs as a non-root user", is_non_root(user), user),
        (
            "no-new-privileges, and the panel's seccomp profile (no btrfs ioctls)",
            {o for o in security if not o.startswith("label=level:")} == ALLOWED_SECURITY_OPT | {seccomp.option()},
            ", ".join(named) or "not set",
        ),
        (
            "All capabilities dropped, none added",
            host.get("CapDrop") == ["ALL"] and not host.get("CapAdd"),
            f"drop {host.get('CapDrop')}, add {host.get('CapAdd') or []}",
        ),
        ("Not privileged", not host.get("Privileged"), str(bool(host.get("Privileged")))),
        ("Memory limit", (host.get("Memory") or 0) > 0, f"{(host.get('Memory') or 0) >> 20} MB"),
        ("CPU limit", (host.get("NanoCpus") or 0) > 0, f"{(host.get('NanoCpus') or 0) / 1e9:g} CPUs"),
        ("Process limit", (host.get("PidsLimit") or 0) > 0, str(host.get("PidsLimit") or "none")),
        (
            "No host namespaces",
            "host" not in namespaces.values() and not any(v.startswith("container:") for v in namespaces.values()),
            f"network {namespaces['NetworkMode']}",
        ),
        ("No host devices", not host.get("Devices"), str(len(host.get("Devices") or []))),
        ("No Docker socket mounted", not any("docker.sock" in (m.get("Source") or "") for m in mounts), f"{len(mounts)} mounts"),
        ("imports is read-only", any(m.get("Destination") == "/workspace/imports" and not m.get("RW") for m in mounts), ""),
        (
            "Read-only root filesystem",
            bool(host.get("ReadonlyRootfs")),
            "read-only" if host.get("ReadonlyRootfs") else "writable (this sandbox opted out)",
        ),
        ("Open-file and process limits", {u.get("Name") for u in host.get("Ulimits") or []} >= {"nofile", "nproc"}, _ulimits_text(host)),
        _sysctls_row(host),
        (
            "No ports published beyond 127.0.0.1",
            all(b.get("HostIp") == "127.0.0.1" for bs in (host.get("PortBindings") or {}).values() for b in (bs or [])),
            "",
        ),
    ]
    if spec is not None:
        drift = spec_drift(spec, data)
        report.append(("Matches the sandbox's saved settings", not drift, "; ".join(drift) or "yes"))
    if processes is not None:
        bad = [p for p in processes if p["cap_eff"] or p["cap_bnd"] or p["uid"] == 0 or not p["no_new_privs"]]
        shown = "; ".join(f"pid {p['pid']} {p['command'][:40]!r} uid {p['uid']} caps {p['cap_eff']:x}" for p in bad[:3])
        report.append(("No process inside has capabilities or runs as root", not bad, shown or f"{len(processes)} processes checked"))
    return report


def _sysctls_row(host: dict) -> tuple[str, bool, str]:
    """Ports below 1024 and ping: refused, or allowed because the sandbox opted in (then the
    comparison with its saved settings says whether it did)."""
    found = host.get("Sysctls") or {}
    said = ", ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in sorted(found.items())) or "Docker's defaults (both allowed)"
    if found == LOOSE_SYSCTLS:
        said += " (this sandbox opted in)"
    return ("No ports below 1024, no ping, unless opted in", found in (STRICT_SYSCTLS, LOOSE_SYSCTLS), said)


def _ulimits_text(host: dict) -> str:
    return ", ".join(f"{u.get('Name')} {u.get('Soft')}/{u.get('Hard')}" for u in host.get("Ulimits") or []) or "none set"


def _log_config(host: dict) -> dict:
    log_config = host.get("LogConfig") or {}
    if log_config.get("Type") != "json-file":
        return {"type": log_config.get("Type")}
    return {k: (log_config.get("Config") or {}).get(k) for k in ("max-size", "max-file")}


def tmpfs_options(spec: ContainerSpec) -> dict[str, str]:
    """Docker's `Tmpfs` for the spec: target -> mount options."""
    uid, _, gid = (spec.user or "").partition(":")
    return {
        target: f"{TMPFS_OPTIONS},size={size}" + (f",noexec,mode=0700,uid={uid},gid={gid}" if target == "/run/secrets" else "")
        for target, size in spec.tmpfs
    }


def spec_drift(spec: ContainerSpec, data: dict) -> list[str]:
    """How a container (its `docker inspect`) differs from what `spec` asks for; [] if it matches.
    Used before a start (a container that drifted is recreated from the spec) and in the report."""
    host, config = data["HostConfig"], data["Config"]
    drift = []
    want_mounts = {(b.source, b.target, not b.read_only) for b in spec.binds}
    want_mounts |= {(v.name, v.target, True) for v in spec.volumes}
    have_mounts = {
        ((m.get("Name") if m.get("Type") == "volume" else m.get("Source")), m.get("Destination"), bool(m.get("RW")))
        for m in data.get("Mounts") or []
    }
    if want_mounts != have_mounts:
        drift.append("mounts differ")
    checks = [
        ("user", config.get("User") or "", spec.user),
        ("image", config.get("Image") or "", spec.image),
        ("memory", host.get("Memory") or 0, spec.memory_bytes),
        ("swap", host.get("MemorySwap") or 0, spec.memory_bytes),
        ("CPUs", host.get("NanoCpus") or 0, spec.nano_cpus),
        ("process limit", host.get("PidsLimit") or 0, spec.pids_limit),
        ("capabilities dropped", list(host.get("CapDrop") or []), list(spec.cap_drop)),
        ("capabilities added", list(host.get("CapAdd") or []), list(spec.cap_add)),
        ("security options", sorted(host.get("SecurityOpt") or []), sorted(spec.security_opt)),
        ("privileged", bool(host.get("Privileged")), spec.privileged),
        ("network", host.get("NetworkMode") or "", spec.network),
        ("networks attached", sorted((data.get("NetworkSettings") or {}).get("Networks") or {}), [spec.network]),
        ("name servers", list(host.get("Dns") or []), list(spec.dns)),
        ("devices", len(host.get("Devices") or []), len(spec.devices)),
        ("read-only root", bool(host.get("ReadonlyRootfs")), spec.read_only_rootfs),
        ("runtime", host.get("Runtime") or "runc", spec.runtime or "runc"),
        ("labels", {k: (config.get("Labels") or {}).get(k) for k in spec.labels}, spec.labels),
        ("TTY", bool(config.get("Tty")), False),
        ("log files", _log_config(host), {"max-size": spec.log_max_size, "max-file": str(spec.log_max_files)}),
        ("in-memory folders", host.get("Tmpfs") or {}, tmpfs_options(spec)),
        ("limits", sorted((u["Name"], u["Soft"], u["Hard"]) for u in host.get("Ulimits") or []), sorted(spec.ulimits)),
        ("kernel sysctls", host.get("Sysctls") or {}, spec.sysctls),
    ]
    drift += [f"{what} is {have!r}, not {want!r}" for what, have, want in checks if have != want]
    return drift
