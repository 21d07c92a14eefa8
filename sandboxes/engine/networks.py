"""Networks: the sandboxes' own bridge."""

import ipaddress
from typing import Any

import docker
from django.conf import settings

from .client import LABEL_INSTANCE, LABEL_MANAGED, BaseClient, Conflict, EngineError, NotFound, instance_filter


class NetworksMixin(BaseClient):
    def ensure_network(self, name: str, *, subnet: str, bridge: str) -> str:
        """Create the sandbox bridge if missing: its own subnet, inter-container traffic off."""
        for net in self.call(self.api.networks, names=[name]):
            if net["Name"] == name:
                if (net.get("Options") or {}).get("com.docker.network.bridge.enable_icc") != "false":
                    raise EngineError(
                        f"Network {name} exists but lets containers talk to each other; "
                        "remove it (the panel recreates it isolated) or set SANDBOX_NETWORK."
                    )
                if net.get("EnableIPv6"):
                    raise EngineError(
                        f"Network {name} has IPv6, which the egress rules do not filter; remove it (the panel recreates it without)."
                    )
                if (net.get("Options") or {}).get("com.docker.network.bridge.name") != bridge:
                    # The egress rules match the bridge by its name: another name escapes them.
                    raise EngineError(
                        f"Network {name} exists on another bridge than {bridge}, which the egress rules "
                        "would not cover; remove it (the panel recreates it) or set SANDBOX_BRIDGE."
                    )
                return net["Id"]
        # The gateway is the subnet's first address (Docker's default, said here): the allowlist
        # bridge's resolver answers there (sandboxes.network.allow_gateway).
        gateway = str(next(ipaddress.IPv4Network(subnet).hosts()))
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet, gateway=gateway)])
        try:
            return self.call(
                self.api.create_network,
                name,
                driver="bridge",
                ipam=ipam,
                enable_ipv6=False,  # even where the daemon's default-network-opts would turn it on
                check_duplicate=True,  # older engines allow two networks of one name unless asked
                options={"com.docker.network.bridge.enable_icc": "false", "com.docker.network.bridge.name": bridge},
                labels={LABEL_MANAGED: "true", LABEL_INSTANCE: settings.PANEL_INSTANCE},
            )["Id"]
        except Conflict:  # created concurrently by another worker
            return self.call(self.api.inspect_network, name)["Id"]

    def switch_network(self, container_id: str, *, leave: str, join: str) -> None:
        """Move a running container from network `leave` to `join` ("none" included), live."""
        try:
            self.call(self.api.disconnect_container_from_network, container_id, leave, force=True)
        except NotFound:
            pass  # not attached to it (any more)
        self.call(self.api.connect_container_to_network, container_id, join)

    def containers_on_network(self, name: str, *, labels: tuple[str, ...] = ()) -> list[str]:
        """The ids of this instance's running or paused containers attached to network `name`
        (and carrying `labels`, "key=value" each)."""
        found = self.call(self.api.containers, filters={"network": [name], "label": [*instance_filter(), *labels]})
        return [c["Id"] for c in found]

    def inspect_network(self, name: str) -> dict[str, Any]:
        return self.call(self.api.inspect_network, name)
