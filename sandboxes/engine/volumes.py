"""Volumes: each sandbox's home, and reading or writing its files through the engine (so that it
works when the engine runs on another machine)."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import docker.errors
import requests.exceptions

from .. import policy
from .client import BaseClient, EngineError, NotFound, carries, instance_filter, translate


class VolumesMixin(BaseClient):
    def ensure_volume(self, name: str, *, labels: dict[str, str], device: str = "") -> None:
        """Create the named volume (bound to the host folder `device`, if given). Docker returns
        an existing volume of that name instead, so its labels and its binding are checked: a
        volume that is not this sandbox's, or not bound where it should be, is never used."""
        opts = {"type": "none", "o": "bind", "device": device} if device else None
        volume = self.call(self.api.create_volume, name=name, driver="local", driver_opts=opts, labels=labels)
        if not carries(volume.get("Labels"), labels):
            raise EngineError(f"A volume named {name} exists that does not belong to this sandbox; it is never reused.")
        if (volume.get("Options") or None) != opts:
            raise EngineError(f"The volume {name} is not bound to {device or 'nothing'} as the sandbox needs; it is left alone.")

    def volume_mountpoint(self, name: str) -> str:
        """Where the engine keeps the volume's files (on the engine's machine)."""
        return str(self.call(self.api.inspect_volume, name).get("Mountpoint") or "")

    def instance_volumes(self, label: str) -> dict[str, dict[str, str]]:
        """The volumes of this panel instance that carry the label `label` (KEY or KEY=VALUE):
        name -> labels."""
        found = self.call(self.api.volumes, filters={"label": [*instance_filter(), label]})
        return {v["Name"]: v.get("Labels") or {} for v in (found or {}).get("Volumes") or []}

    def volume_exists(self, name: str) -> bool:
        return self._inspected(self.api.inspect_volume, name) is not None

    def remove_volume(self, name: str, *, labels: dict[str, str]) -> bool:
        """Remove the volume if it carries `labels` (ours); False if it is someone else's."""
        try:
            if not carries(self.call(self.api.inspect_volume, name).get("Labels"), labels):
                return False
            self.call(self.api.remove_volume, name, force=True)
        except NotFound:
            pass
        return True

    @contextmanager
    def helper(self, spec: policy.ContainerSpec, *, rules: policy.Rules) -> Iterator[str]:
        """A container that is created and never started, only to reach a volume's files with
        the archive API (`docker cp`): nothing of the sandbox runs. Its spec passes the policy
        like any other (create_container checks it). One left by a worker that died is replaced;
        the helper is removed when the block ends."""
        if not self.remove_container_if_ours(spec.name, labels=spec.labels):  # type: ignore[attr-defined]
            raise EngineError(f"A container named {spec.name} exists that is not the panel's; it is never touched.")
        container_id = self.create_container(spec, rules=rules)  # type: ignore[attr-defined]
        try:
            yield container_id
        finally:
            self.remove_container(container_id)  # type: ignore[attr-defined]

    def read_archive(self, container_id: str, path: str) -> Iterator[bytes]:
        """The folder at `path` in the container as an uncompressed tar stream (its members
        named <folder>/...), in chunks. Links inside are archived as links, never followed."""
        stream, _stat = self.call(self.api.get_archive, container_id, path, chunk_size=1 << 20)
        try:
            yield from stream
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise translate(exc, self.host) from exc

    def write_archive(self, container_id: str, path: str, data: IO[bytes] | Iterator[bytes]) -> None:
        """Unpack an uncompressed tar stream (a file, or chunks sent as they come) into the
        folder at `path` in the container."""
        if not self.call(self.api.put_archive, container_id, path, data):
            raise EngineError(f"Docker did not unpack the archive into {path}.")
