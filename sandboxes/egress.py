"""Egress rules for the sandbox bridge, enforced on the host: the only code that runs iptables.

A sandbox in `internet` mode reaches the public internet and nothing else. Two chains of this
instance's own, named after its bridge, hold the rules:

- `CCP-F-<bridge>`, jumped to from DOCKER-USER (traffic *through* the host): replies pass;
  traffic to another sandbox on the bridge, to the private, loopback, link-local (cloud
  metadata), carrier-grade NAT, multicast and reserved ranges is dropped; the rest goes on to
  Docker's own rules (NAT to the internet). The one exception is DNS (port 53 only) to the
  host's own resolvers when they are on a private address, which is how Docker's embedded DNS
  answers for a container on a home network.
- `CCP-I-<bridge>`, jumped to from INPUT (traffic *to* the host, on any of its addresses, the
  bridge gateway included): only replies to connections the host opened pass.

The container has no NET_ADMIN or NET_RAW and the rules live in the host's namespace, so
nothing inside a sandbox can lift them. `none` mode has no network to filter. The bridge has no
IPv6 (the panel never enables it), so there is no second family to filter.

Fail closed: a sandbox in `internet` mode is started only when `verify()` finds the rules in
place (actions.run_start). The rules are applied when the panel starts (the events watcher, at
start and after every reconnect, so after a dockerd restart too), when the network is created,
and by the periodic check, which repairs and audits any difference it finds.
"""

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass

from django.conf import settings

# Addresses a sandbox never reaches. 198.18.0.0/15 (benchmarking) is deliberately not here: the
# tests stand "the internet" up in it.
BLOCKED_RANGES = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # carrier-grade NAT
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
    "172.16.0.0/12",  # private, Docker's own networks included
    "192.0.0.0/24",  # IETF protocol assignments
    "192.168.0.0/16",  # private
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, broadcast
)
RESOLV_CONF = "/etc/resolv.conf"
TIMEOUT = 20


class EgressError(Exception):
    """The rules could not be read or applied; the message says why."""


@dataclass(frozen=True)
class Chains:
    bridge: str

    @property
    def forward(self) -> str:
        return f"CCP-F-{self.bridge}"

    @property
    def input(self) -> str:
        return f"CCP-I-{self.bridge}"


def chains(bridge: str | None = None) -> Chains:
    return Chains(bridge or settings.SANDBOX_BRIDGE)


def enforced() -> bool:
    """Whether this panel filters egress (SANDBOX_EGRESS_RULES; on unless an admin turned it off)."""
    return bool(settings.SANDBOX_EGRESS_RULES)


def host_resolvers(path: str = RESOLV_CONF) -> list[str]:
    """The IPv4 name servers of the host that lie in a blocked range (DNS to them stays open)."""
    found = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read(65536).splitlines()
    except OSError:
        return []
    blocked = [ipaddress.ip_network(r) for r in BLOCKED_RANGES]
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                address = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if address.version == 4 and not address.is_loopback and any(address in net for net in blocked):
                found.append(str(address))
    return sorted(set(found))


def wanted_rules(c: Chains, resolvers: list[str]) -> dict[str, list[str]]:
    """Each chain's rules, exactly as `iptables -S <chain>` prints them."""
    forward = [
        f"-A {c.forward} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        f"-A {c.forward} -o {c.bridge} -j DROP",
    ]
    for resolver in resolvers:
        for proto in ("udp", "tcp"):
            forward.append(f"-A {c.forward} -d {resolver}/32 -p {proto} -m {proto} --dport 53 -j RETURN")
    forward += [f"-A {c.forward} -d {net} -j DROP" for net in BLOCKED_RANGES]
    forward.append(f"-A {c.forward} -j RETURN")
    host = [
        f"-A {c.input} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        f"-A {c.input} -j DROP",
    ]
    return {c.forward: forward, c.input: host}


def jumps(c: Chains) -> dict[str, str]:
    """The rule in each built-in chain that sends the bridge's traffic to ours."""
    return {"DOCKER-USER": f"-i {c.bridge} -j {c.forward}", "INPUT": f"-i {c.bridge} -j {c.input}"}


def _iptables(*args: str, stdin: str | None = None, tool: str = "iptables") -> str:
    binary = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if binary is None:
        raise EgressError(f"{tool} is not installed; the egress rules cannot be applied (apt-get install iptables).")
    try:
        done = subprocess.run([binary, "-w", "10", *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EgressError(f"{tool} failed: {exc}") from exc
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        reason = message[-1] if message else f"exit code {done.returncode}"
        if "Permission denied" in reason or "you must be root" in reason:
            reason += " (the panel must run as root to enforce egress rules, or set SANDBOX_EGRESS_RULES=false)"
        raise EgressError(f"{tool} {' '.join(args[:2])}: {reason}")
    return done.stdout


def _listed(chain: str) -> list[str] | None:
    """The rules of a chain as `iptables -S` prints them, or None when it does not exist."""
    try:
        out = _iptables("-S", chain)
    except EgressError as exc:
        # iptables-nft 1.8.9 calls a chain that does not exist "incompatible"; a real one that is
        # foreign to it is caught when apply() cannot replace it.
        if any(word in str(exc) for word in ("No chain", "does not exist", "incompatible")):
            return None
        raise
    return [line for line in out.splitlines() if line.startswith("-A ")]


def problems(bridge: str | None = None) -> list[str]:
    """What is wrong with the live rules, in words; empty when they are exactly in place."""
    c = chains(bridge)
    found = []
    for chain, rules in wanted_rules(c, host_resolvers()).items():
        live = _listed(chain)
        if live is None:
            found.append(f"chain {chain} is missing")
        elif live != rules:
            found.append(f"chain {chain} differs from what it should be")
    for parent, rule in jumps(c).items():
        live = _listed(parent)
        if live is None:
            found.append(f"chain {parent} is missing")
            continue
        ours = f"-A {parent} {rule}"
        if ours not in live:
            found.append(f"the jump from {parent} to our chain is missing")
            continue
        # Nothing before our jump may decide the bridge's traffic: only other panels' jumps.
        for line in live[: live.index(ours)]:
            if " -j CCP-" not in line:
                found.append(f"a rule comes before ours in {parent}: {line}")
                break
    forward = _listed("FORWARD") or []
    if "-A FORWARD -j DOCKER-USER" not in forward:
        found.append("FORWARD does not go through DOCKER-USER")
    else:
        for line in forward[: forward.index("-A FORWARD -j DOCKER-USER")]:
            if line.endswith("-j ACCEPT") or line.endswith("-j RETURN"):
                found.append(f"a rule comes before DOCKER-USER in FORWARD: {line}")
                break
    return found


def apply(bridge: str | None = None) -> None:
    """Put the rules in place, replacing each chain's content in one step (iptables-restore)."""
    c = chains(bridge)
    wanted = wanted_rules(c, host_resolvers())
    lines = ["*filter"]
    lines += [f":{chain} - [0:0]" for chain in wanted]
    for rules in wanted.values():
        lines += rules
    lines.append("COMMIT")
    if _listed("DOCKER-USER") is None:
        lines.insert(1, ":DOCKER-USER - [0:0]")  # Docker makes it at its start; a panel may come first
        lines.insert(len(lines) - 1, "-A DOCKER-USER -j RETURN")
    _iptables("--noflush", stdin="\n".join(lines) + "\n", tool="iptables-restore")
    for parent, rule in jumps(c).items():
        live = _listed(parent) or []
        ours = f"-A {parent} {rule}"
        while ours in live and any(" -j CCP-" not in line for line in live[: live.index(ours)]):
            _iptables("-D", parent, *rule.split())  # something was put before it: move it up
            live = _listed(parent) or []
        if ours not in live:
            _iptables("-I", parent, "1", *rule.split())


def remove(bridge: str | None = None) -> None:
    """Take this bridge's rules away (tests, and an admin turning SANDBOX_EGRESS_RULES off)."""
    c = chains(bridge)
    for parent, rule in jumps(c).items():
        while f"-A {parent} {rule}" in (_listed(parent) or []):
            _iptables("-D", parent, *rule.split())
    for chain in (c.forward, c.input):
        if _listed(chain) is not None:
            _iptables("-F", chain)
            _iptables("-X", chain)
