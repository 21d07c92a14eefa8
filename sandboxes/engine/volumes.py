"""Volumes: each sandbox's home."""

from .client import BaseClient, EngineError, NotFound, carries


class VolumesMixin(BaseClient):
    def ensure_volume(self, name: str, *, labels: dict[str, str]) -> None:
        """Create the named volume. Docker returns an existing volume of that name instead, so
        its labels are checked: a volume that is not this sandbox's is never used."""
        volume = self.call(self.api.create_volume, name=name, driver="local", labels=labels)
        if not carries(volume.get("Labels"), labels):
            raise EngineError(f"A volume named {name} exists that does not belong to this sandbox; it is never reused.")

    def volume_exists(self, name: str) -> bool:
        try:
            self.call(self.api.inspect_volume, name)
            return True
        except NotFound:
            return False

    def remove_volume(self, name: str, *, labels: dict[str, str]) -> bool:
        """Remove the volume if it carries `labels` (ours); False if it is someone else's."""
        try:
            if not carries(self.call(self.api.inspect_volume, name).get("Labels"), labels):
                return False
            self.call(self.api.remove_volume, name, force=True)
        except NotFound:
            pass
        return True
