"""Streams: a container's output, its resource use and interactive exec sessions. The live
views (logs, stats, terminal) read these per socket; they never pass through the status path."""

from .client import BaseClient


class StreamsMixin(BaseClient):
    def logs(self, container_id: str, *, tail: int = 200) -> str:
        """The last `tail` lines of the container's output, as text."""
        raw = self.call(self.api.logs, container_id, stdout=True, stderr=True, tail=tail, timestamps=False)
        return raw.decode("utf-8", errors="replace")
