"""A fake Docker engine, in memory, for the fast tests of services, forms, views and consumers.

It keeps the contract that matters to the panel: `create_container` runs the real security
policy first (so folders are judged on disk as with the real engine), names and labels behave
like Docker's (a name is taken once; a volume of an existing name comes back as it is), and
errors are the engine's own. Integration tests (marked `docker`) drive the real engine instead.
"""

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

from sandboxes import engine, policy
from sandboxes.engine.client import carries


@dataclass
class FakeContainer:
    id: str
    spec: policy.ContainerSpec
    status: str = "created"
    exit_code: int = 0
    log: list[str] = field(default_factory=list)


class FakeEngine:
    def __init__(self, *, images: set[str] | None = None, down: bool = False):
        self.images: set[str] = set(images or ())
        self.containers: dict[str, FakeContainer] = {}
        self.volumes: dict[str, dict[str, str]] = {}
        self.networks: dict[str, dict[str, str]] = {}
        self.down = down
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

    # --- the EngineClient interface the services use ----------------------------------------
    def ping(self) -> str:
        self._check("ping")
        return "fake"

    def data_root(self) -> str | None:
        return "/var/lib/docker"

    def image_exists(self, ref: str) -> bool:
        self._check("image_exists")
        return ref in self.images

    def ensure_volume(self, name: str, *, labels: dict[str, str], device: str = "") -> None:
        self._check("ensure_volume")
        self.volumes.setdefault(name, dict(labels))
        if not carries(self.volumes[name], labels):
            raise engine.EngineError(f"A volume named {name} exists that does not belong to this sandbox; it is never reused.")

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
        self.containers[cid] = FakeContainer(cid, spec)
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
        return {
            "Id": c.id,
            "Name": "/" + s.name,
            "State": {"Status": c.status, "Running": c.status == "running"},
            "Config": {"User": s.user, "Image": s.image, "Labels": dict(s.labels)},
            "Mounts": mounts,
            "NetworkSettings": {"Networks": {s.network: {}}},
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
        self._get(container_id).status = "running"

    def stop(self, container_id: str, *, timeout: int) -> None:
        self._check("stop")
        self._get(container_id).status = "exited"

    def pause(self, container_id: str) -> None:
        self._check("pause")
        self._get(container_id).status = "paused"

    def unpause(self, container_id: str) -> None:
        self._check("unpause")
        self._get(container_id).status = "running"

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
