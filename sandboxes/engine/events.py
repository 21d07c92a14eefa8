"""Events: what Docker reports about this instance's containers, as it happens."""

from collections.abc import Iterator
from typing import Any

import docker.errors
import requests.exceptions

from .client import BaseClient, instance_filter, translate


class EventsMixin(BaseClient):
    def events(self, *, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Container events for this instance's sandboxes, as plain dicts, until the stream ends.
        The generator closes the underlying HTTP stream when it is closed itself."""
        stream = self.call(self.api.events, since=since, decode=True, filters={"type": "container", "label": instance_filter()})
        try:
            for event in stream:
                yield {
                    "action": event.get("Action") or event.get("status", ""),
                    "id": event.get("id") or event.get("Actor", {}).get("ID", ""),
                    "attributes": event.get("Actor", {}).get("Attributes", {}),
                    "time": event.get("time"),
                }
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise translate(exc, self.host) from exc
        finally:
            stream.close()
