"""A fake Docker engine, in memory, for the fast tests of services, forms, views and consumers.

It keeps the contract that matters to the panel: `create_container` runs the real security
policy first (so folders are judged on disk as with the real engine), names and labels behave
like Docker's (a name is taken once; a volume of an existing name comes back as it is), and
errors are the engine's own. Integration tests (marked `docker`) drive the real engine instead.
"""

import dataclasses
import hashlib
import io
import ipaddress
import itertools
import struct
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from sandboxes import engine, policy
from sandboxes.engine.client import carries, instance_filter


@dataclass
class FakeContainer:
    id: str
    spec: policy.ContainerSpec
    status: str = "created"
    exit_code: int = 0
    log: list[str] = field(default_factory=list)
    network: str = ""  # where it is attached now (switch_network moves it); its spec's at create
    address: str = ""  # its address on that network, given when it is attached


FAKE_LOG_EPOCH = 1767225600  # 2026-01-01T00:00:00Z


class _InMemoryResponse:
    """What engine.LogStream reads a log from (an HTTP response's raw body), held in memory."""

    def __init__(self, body: bytes):
        self.raw = io.BufferedReader(io.BytesIO(body))  # type: ignore[arg-type]

    def close(self) -> None:
        self.raw.close()


def _unsupported(what: str, needs: str) -> NotImplementedError:
    """For a method the fake does not imitate: says what a fast test of it would need first."""
    return NotImplementedError(f"FakeEngine.{what} is not imitated: a fast test of it needs {needs}; use the real engine (docker tests).")


class FakeEngine:
    """Satisfies `engine.Engine` (mypy checks it, at the end of this file). What it cannot imitate
    in memory (a process inside a container, a socket to it, a volume's files) raises
    NotImplementedError saying what a fast test would need; a test may put its own function on the
    instance instead (as test_live does for `stats_once`)."""

    def __init__(self, *, images: set[str] | None = None, down: bool = False, runtimes: Sequence[str] = ("runc",)):
        # An engine on no machine: nothing of this host (its egress rules, its /proc) is for it.
        self.host = engine.Host(name="fake", base_url="fake://engine", timeout=5)
        self.images: set[str] = set(images or ())
        self.image_label_map: dict[str, dict[str, str]] = {}  # labels of the images that have any
        self.containers: dict[str, FakeContainer] = {}
        self.volumes: dict[str, dict[str, str]] = {}
        self.networks: dict[str, dict[str, str]] = {}
        self.down = down
        self._runtimes = sorted(runtimes)
        self.calls: list[str] = []
        self._ids = itertools.count(1)

    # --- helpers -------------------------------------------------------------------------------
    def _check(self, what: str) -> None:
        self.calls.append(what)
        if self.down:
            raise engine.EngineUnavailable("Docker engine is not reachable (fake engine is down).")

    def _find(self, id_or_name: str) -> FakeContainer | None:
        if id_or_name in self.containers:
            return self.containers[id_or_name]
        return next((c for c in self.containers.values() if c.spec.name == id_or_name or c.id.startswith(id_or_name)), None)

    def _get(self, id_or_name: str) -> FakeContainer:
        found = self._find(id_or_name)
        if found is None:
            raise engine.NotFound(f"No such container: {id_or_name}")
        return found

    def _attach(self, c: FakeContainer, network: str) -> None:
        """Attach a running container to `network`, with the next free address of its subnet
        after the gateway (Docker's way); "none" and networks the fake did not make get none."""
        c.network, c.address = network, ""
        if network not in self.networks:
            return
        taken = {o.address for o in self.containers.values() if o.network == network and o is not c}
        hosts = ipaddress.IPv4Network(self.networks[network]["subnet"]).hosts()
        next(hosts)  # the gateway
        c.address = next(str(a) for a in hosts if str(a) not in taken)

    # --- the Engine protocol (sandboxes/engine/protocol.py) ----------------------------------
    def ping(self) -> str:
        self._check("ping")
        return "fake"

    def data_root(self) -> str | None:
        return "/var/lib/docker"

    def image_exists(self, ref: str) -> bool:
        self._check("image_exists")
        return ref in self.images

    def image_id(self, ref: str) -> str | None:
        self._check("image_id")
        return "sha256:" + hashlib.sha256(ref.encode()).hexdigest() if ref in self.images else None

    def ensure_volume(self, name: str, *, labels: dict[str, str], device: str = "") -> None:
        self._check("ensure_volume")
        self.volumes.setdefault(name, dict(labels))
        if not carries(self.volumes[name], labels):
            raise engine.EngineError(f"A volume named {name} exists that does not belong to this sandbox; it is never reused.")

    def instance_volumes(self, label: str) -> dict[str, dict[str, str]]:
        self._check("instance_volumes")
        key, _, value = label.partition("=")
        return {n: dict(v) for n, v in self.volumes.items() if key in v and (not value or v[key] == value)}

    def volume_exists(self, name: str) -> bool:
        self._check("volume_exists")
        return name in self.volumes

    def remove_volume(self, name: str, *, labels: dict[str, str]) -> bool:
        self._check("remove_volume")
        if name in self.volumes and not carries(self.volumes[name], labels):
            return False
        self.volumes.pop(name, None)
        return True

    def ensure_network(self, name: str, *, subnet: str, bridge: str) -> str:
        self._check("ensure_network")
        self.networks.setdefault(name, {"subnet": subnet, "bridge": bridge})
        return name

    def create_container(self, spec: policy.ContainerSpec, *, rules: policy.Rules) -> str:
        self._check("create_container")
        policy.check(spec, rules)
        if spec.image not in self.images:
            raise engine.NotFound(f"No such image: {spec.image}")
        if self._find(spec.name) is not None:
            raise engine.Conflict(f"The container name {spec.name} is already in use.")
        cid = uuid.uuid4().hex + uuid.uuid4().hex
        self.containers[cid] = FakeContainer(cid, spec, network=spec.network)
        return cid

    def container_state(self, container_id: str) -> engine.ContainerState | None:
        self._check("container_state")
        c = self._find(container_id)
        if c is None:
            return None
        return engine.ContainerState(
            id=c.id, name=c.spec.name, status=c.status, exit_code=c.exit_code, oom_killed=False, error="", labels=dict(c.spec.labels)
        )

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        self._check("inspect_container")
        c = self._get(container_id)
        s = c.spec
        mounts = [{"Type": "bind", "Source": b.source, "Destination": b.target, "RW": not b.read_only} for b in s.binds]
        mounts += [{"Type": "volume", "Name": v.name, "Destination": v.target, "RW": True} for v in s.volumes]
        if s.managed_settings:  # as the real engine mounts it (sandboxes.engine.containers)
            mounts.append({"Type": "bind", "Source": s.managed_settings, "Destination": policy.MANAGED_SETTINGS_TARGET, "RW": False})
        return {
            "Id": c.id,
            "Name": "/" + s.name,
            "State": {"Status": c.status, "Running": c.status == "running"},
            "Config": {"User": s.user, "Image": s.image, "Labels": dict(s.labels), "Env": [f"{k}={v}" for k, v in s.environment.items()]},
            "Mounts": mounts,
            "NetworkSettings": {"Networks": {c.network: {}}},
            "GraphDriver": {"Name": "overlay2", "Data": {}},  # Docker's default storage driver, as here
            "HostConfig": {
                "Memory": s.memory_bytes,
                "MemorySwap": s.memory_bytes,
                "NanoCpus": s.nano_cpus,
                "PidsLimit": s.pids_limit,
                "CapDrop": list(s.cap_drop),
                "CapAdd": list(s.cap_add) or None,
                "SecurityOpt": list(s.security_opt),
                "Privileged": s.privileged,
                "NetworkMode": s.network,
                "Dns": list(s.dns),
                "Devices": [],
                "PortBindings": {},
                "ReadonlyRootfs": s.read_only_rootfs,
                "StorageOpt": None,  # the panel never gives its containers a layer size
                "Tmpfs": policy.tmpfs_options(s) or None,
                "Ulimits": [{"Name": n, "Soft": soft, "Hard": hard} for n, soft, hard in s.ulimits] or None,
                "Sysctls": dict(s.sysctls) or None,
                "Runtime": s.runtime or "runc",
                "PidMode": "",
                "IpcMode": "private",
                "UTSMode": "",
                "UsernsMode": "",
                "LogConfig": {"Type": "json-file", "Config": {"max-size": s.log_max_size, "max-file": str(s.log_max_files)}},
            },
        }

    def start(self, container_id: str) -> None:
        self._check("start")
        c = self._get(container_id)
        c.status = "running"
        self._attach(c, c.network)

    def stop(self, container_id: str, *, timeout: int) -> None:
        self._check("stop")
        c = self._get(container_id)
        c.status, c.address = "exited", ""

    def pause(self, container_id: str) -> None:
        self._check("pause")
        self._get(container_id).status = "paused"

    def unpause(self, container_id: str) -> None:
        self._check("unpause")
        self._get(container_id).status = "running"

    def rename_container(self, container_id: str, name: str) -> None:
        self._check("rename_container")
        c = self._get(container_id)
        if self._find(name) not in (None, c):
            raise engine.Conflict(f"the name {name} is taken")
        c.spec = dataclasses.replace(c.spec, name=name)

    def update_limits(self, container_id: str, *, memory_bytes: int, nano_cpus: int, pids_limit: int) -> None:
        self._check("update_limits")
        c = self._get(container_id)
        c.spec = dataclasses.replace(c.spec, memory_bytes=memory_bytes, nano_cpus=nano_cpus, pids_limit=pids_limit)

    def remove_container(self, container_id_or_name: str) -> None:
        self._check("remove_container")
        c = self._find(container_id_or_name)
        if c is not None:
            del self.containers[c.id]

    def remove_container_if_ours(self, name: str, *, labels: dict[str, str]) -> bool:
        self._check("remove_container_if_ours")
        c = self._find(name)
        if c is None:
            return True
        if not carries(c.spec.labels, labels):
            return False
        del self.containers[c.id]
        return True

    def instance_containers(self) -> list[engine.ContainerState]:
        return [s for c in list(self.containers.values()) if (s := self.container_state(c.id)) is not None]

    def containers_claiming(self, *, name: str, sandbox_uuid: str) -> list[str]:
        self._check("containers_claiming")
        return [c.id for c in self.containers.values() if c.spec.name == name or c.spec.labels.get(engine.LABEL_UUID) == sandbox_uuid]

    def process_privileges(self, container_id: str) -> list[dict[str, Any]] | None:
        return []

    def mounted_identities(self, container_id: str, targets: list[str]) -> dict[str, tuple[int, int]] | None:
        """What the fake "mounted": each bind source as it is on disk at the start (None, as the
        real engine says, for a container that is not running)."""
        c = self._get(container_id)
        if c.status != "running":
            return None
        found = {}
        for b in c.spec.binds:
            try:
                found[b.target] = policy.dir_identity(b.source)
            except policy.HostPathError:
                pass
        return found

    def logs(self, container_id: str, *, tail: int = 200) -> str:
        self._check("logs")
        return "".join(self._get(container_id).log[-tail:])

    def remove_images(self, *, sandbox_uuid: str) -> list[str]:
        self._check("remove_images")
        return []

    def runtimes(self) -> list[str]:
        self._check("runtimes")
        return list(self._runtimes)

    def events(self, *, since: float | None = None) -> Iterator[dict[str, Any]]:
        raise _unsupported("events", "the fake to record each container's start, stop and death and replay them")

    def exec_run(self, container_id: str, cmd: list[str], *, user: str = "", environment: dict[str, str] | None = None) -> tuple[int, str]:
        self._check("exec_run")
        if self._get(container_id).status != "running":
            raise engine.Conflict(f"Container {container_id} is not running")
        raise _unsupported("exec_run", "a table of commands and the exit code and output each gives")

    # --- networks -------------------------------------------------------------------------------
    def switch_network(self, container_id: str, *, leave: str, join: str) -> None:
        self._check("switch_network")
        c = self._get(container_id)
        if join != "none" and join not in self.networks:
            raise engine.NotFound(f"network {join} not found")
        self._attach(c, join)

    def containers_on_network(self, name: str, *, labels: tuple[str, ...] = ()) -> list[str]:
        """Like Docker's filters: running or paused containers of this instance on `name`."""
        self._check("containers_on_network")
        wanted = dict(item.split("=", 1) for item in (*instance_filter(), *labels))
        return [
            c.id
            for c in self.containers.values()
            if c.network == name and c.status in ("running", "paused") and carries(c.spec.labels, wanted)
        ]

    def inspect_network(self, name: str) -> dict[str, Any]:
        self._check("inspect_network")
        if name not in self.networks:
            raise engine.NotFound(f"network {name} not found")
        net = self.networks[name]
        subnet = ipaddress.IPv4Network(net["subnet"])
        attached = [c for c in self.containers.values() if c.network == name and c.address]
        return {
            "Name": name,
            "Id": name,
            "EnableIPv6": False,
            "IPAM": {"Config": [{"Subnet": net["subnet"], "Gateway": str(next(subnet.hosts()))}]},
            "Options": {"com.docker.network.bridge.enable_icc": "false", "com.docker.network.bridge.name": net["bridge"]},
            "Containers": {c.id: {"Name": c.spec.name, "IPv4Address": f"{c.address}/{subnet.prefixlen}"} for c in attached},
        }

    # --- volumes and their files ----------------------------------------------------------------
    def volume_mountpoint(self, name: str) -> str:
        self._check("volume_mountpoint")
        if name not in self.volumes:
            raise engine.NotFound(f"get {name}: no such volume")
        return f"/var/lib/docker/volumes/{name}/_data"

    @contextmanager
    def helper(self, spec: policy.ContainerSpec, *, rules: policy.Rules) -> Iterator[str]:
        """As the real engine's: made (through the policy), never started, removed at the end."""
        if not self.remove_container_if_ours(spec.name, labels=spec.labels):
            raise engine.EngineError(f"A container named {spec.name} exists that is not the panel's; it is never touched.")
        container_id = self.create_container(spec, rules=rules)
        try:
            yield container_id
        finally:
            self.remove_container(container_id)

    def read_archive(self, container_id: str, path: str) -> Iterator[bytes]:
        raise _unsupported("read_archive", "the fake to keep each volume's files (a tar per volume)")

    def write_archive(self, container_id: str, path: str, data: IO[bytes] | Iterator[bytes]) -> None:
        raise _unsupported("write_archive", "the fake to keep each volume's files (a tar per volume)")

    # --- images ---------------------------------------------------------------------------------
    def image_labels(self, ref: str) -> dict[str, str] | None:
        self._check("image_labels")
        return dict(self.image_label_map.get(ref, {})) if ref in self.images else None

    def pull(self, ref: str) -> None:
        """The fake's registry has every image."""
        self._check("pull")
        self.images.add(ref)

    def import_image(self, tar_path: str, *, repository: str, tag: str, changes: list[str]) -> None:
        self._check("import_image")
        self._add_image(f"{repository}:{tag}", changes)

    def build_image(self, context_dir: str, *, tag: str, buildargs: dict[str, str], labels: dict[str, str]) -> Iterator[str]:
        self._check("build_image")
        self.images.add(tag)
        self.image_label_map[tag] = dict(labels)
        yield f"Successfully tagged {tag}\n"

    def given_environment(self, data: dict) -> list[str]:
        """The fake's images declare no variables: every one the container was given is the panel's."""
        self._check("given_environment")
        return sorted({item.partition("=")[0] for item in (data.get("Config") or {}).get("Env") or []})

    def commit_evidence(self, container_id: str, *, repository: str, tag: str, incident: str, clear_env: Sequence[str] = ()) -> str:
        self._check("commit_evidence")
        for ref, labels in self.image_label_map.items():
            if labels.get(engine.LABEL_EVIDENCE) == incident:
                return self._image_id(ref)
        c = self._get(container_id)
        ref = f"{repository}:{tag}"
        self.images.add(ref)
        self.image_label_map[ref] = {**c.spec.labels, engine.LABEL_EVIDENCE: incident}
        return self._image_id(ref)

    def _add_image(self, ref: str, changes: list[str]) -> None:
        self.images.add(ref)
        labels = [c.removeprefix("LABEL ").split("=", 1) for c in changes if c.startswith("LABEL ") and "=" in c]
        self.image_label_map[ref] = {k.strip('"'): v.strip('"') for k, v in labels}

    @staticmethod
    def _image_id(ref: str) -> str:
        return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()

    # --- streams --------------------------------------------------------------------------------
    def log_stream(self, container_id: str, *, tail: int | str = 100, follow: bool = True, since: str | None = None) -> engine.LogStream:
        """The container's `log` (one entry a line, stdout) as Docker's multiplexed frames, line i
        stamped i seconds after 2026-01-01T00:00:00Z; ends after them, followed or not (nothing
        is written to a fake container later)."""
        self._check("log_stream")
        lines = list(enumerate(self._get(container_id).log))
        if since is not None:
            lines = [(i, text) for i, text in lines if FAKE_LOG_EPOCH + i >= float(since)]
        elif tail != "all":
            lines = lines[len(lines) - int(tail) :] if int(tail) else []
        frames = b""
        for i, text in lines:
            stamp = datetime.fromtimestamp(FAKE_LOG_EPOCH + i, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000000000Z")
            payload = f"{stamp} {text.rstrip(chr(10))}\n".encode()
            frames += struct.pack(">BxxxL", 1, len(payload)) + payload
        return engine.LogStream(_InMemoryResponse(frames), None, False)

    def stats_once(self, container_id: str) -> dict[str, Any]:
        raise _unsupported("stats_once", "a sample of Docker's stats; a test may set one on the instance, as test_live does")

    def top(self, container_id: str) -> list[dict[str, str]]:
        raise _unsupported("top", "the processes each fake container runs")

    def diff(self, container_id: str) -> list[dict[str, Any]]:
        """The fake has no root filesystem to change: nothing changed."""
        self._check("diff")
        self._get(container_id)
        return []

    def open_terminal(self, container_id: str, *, user: str, workdir: str, cmd: list[str], env: dict[str, str]) -> engine.Terminal:
        raise _unsupported("open_terminal", "a shell behind one end of a socket pair")

    def resize_terminal(self, exec_id: str, *, cols: int, rows: int) -> None:
        """The fake opens no terminals, so every exec id is unknown, as Docker says of one."""
        self._check("resize_terminal")
        raise engine.NotFound(f"No such exec instance: {exec_id}")

    def end_terminal(self, exec_id: str, *, container_id: str) -> bool:
        """As the real engine answers for an engine on another machine: it cannot hang up here."""
        self._check("end_terminal")
        return False

    def terminal_running(self, exec_id: str) -> bool:
        self._check("terminal_running")
        return False


if TYPE_CHECKING:
    # mypy holds the fake to the contract the real engine keeps (sandboxes/engine/protocol.py).
    _satisfies: type[engine.Engine] = FakeEngine
