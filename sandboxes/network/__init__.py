"""Networking: everything that decides where a sandbox's packets may go.

Callers import this package (`from sandboxes import network`) and use the names below; the
submodules behind them are its own business:

- the one table of the panel's networks (`bridge_of(mode)`, `network_of(mode)`, `networks()`,
  `internet_bridge()`, `allowlist_bridge()`: each network's Docker name, bridge and subnet);
- the one gate (`may_join(mode, local_engine=...)`, a `Decision` with its reason) that a start, a
  live change of mode and the security checklist all ask whether a sandbox may be on its network;
- the host's egress rules (`network.apply`, `remove`, `problems`, `fingerprint`), the only code
  that runs iptables and ipset;
- the allowlist bridge's grants (`grant`, `revoke`, `grants`, `grants_lock`);
- the host's name servers and addresses (`host_resolvers`, `docker_upstreams`, `lan_subnets`);
- `network.allowlist`, the list parser and the presets, and `network.grant_ledger`, what each
  grant is held by.

The services that run inside the events watcher's process (`manage.py watch_engine`, the
Procfile's `events` line), each in a thread of its own, are imported by name where they start:
`sandboxes.network.resolver` (the allowlist bridge's DNS), `sandboxes.network.decision_log`
(refusals read from the kernel's log) with `sandboxes.network.decision_budget` (the rows a
second both may write), and `sandboxes.network.watch` (the rule watcher).
"""

from . import allowlist, grant_ledger
from .bridges import Bridge, allowlist_bridge, bridge_of, ensure_network_of, internet_bridge, network_of, networks
from .bridges import table as bridges_table
from .commands import EgressError
from .gate import Decision, may_join
from .host import bridge_present, dropped_ranges, enforced, host_addresses, lan_subnets
from .ipset import Grant, comment, grant, grants, grants_lock, revoke
from .iptables import apply, fingerprint, problems, remove
from .nameservers import RESOLV_CONF, docker_asks_loopback, docker_upstreams, host_resolvers
from .rules import (
    BLOCKED_RANGES,
    FORWARD_JUMP,
    LOG_RATE,
    Chains,
    allow_chains,
    allow_gateway,
    chains,
    wanted_allow_nat,
    wanted_allow_rules,
    wanted_rules,
)

__all__ = [
    "BLOCKED_RANGES",
    "FORWARD_JUMP",
    "LOG_RATE",
    "RESOLV_CONF",
    "Bridge",
    "Chains",
    "Decision",
    "EgressError",
    "Grant",
    "allow_chains",
    "allow_gateway",
    "allowlist",
    "allowlist_bridge",
    "apply",
    "bridge_of",
    "bridge_present",
    "bridges_table",
    "chains",
    "comment",
    "docker_asks_loopback",
    "docker_upstreams",
    "dropped_ranges",
    "enforced",
    "fingerprint",
    "grant",
    "grant_ledger",
    "grants",
    "grants_lock",
    "host_addresses",
    "host_resolvers",
    "internet_bridge",
    "lan_subnets",
    "may_join",
    "network_of",
    "ensure_network_of",
    "networks",
    "problems",
    "remove",
    "revoke",
    "wanted_allow_nat",
    "wanted_allow_rules",
    "wanted_rules",
]
