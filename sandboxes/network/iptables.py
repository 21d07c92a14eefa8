"""Egress rules for the sandbox bridge, enforced on the host: the only code that runs iptables.

A sandbox in `internet` mode reaches the public internet and nothing else. Two chains of this
instance's own, named after its bridge, hold the rules:

- `CCP-F-<bridge>`, jumped to from DOCKER-USER (traffic *through* the host), without any
  state: every packet to another sandbox on the bridge, to the private, loopback, link-local
  (cloud metadata), carrier-grade NAT, multicast and reserved ranges, and to the subnets of the
  interfaces that carry the host's default route (its LAN, even on public addresses), is
  dropped, so a flow opened while the rules were missing dies the moment they are back; the
  rest goes on to Docker's own rules (NAT to the internet). The one exception is DNS (port 53
  only) to the host's own resolvers when they sit in a dropped range, which is how Docker's
  embedded DNS answers for a container on a home network.
- `CCP-I-<bridge>`, jumped to from INPUT (traffic *to* the host, on any of its addresses, the
  bridge gateway included): only the reply half of connections the host opened passes.

DOCKER-USER must come first in FORWARD (Docker puts it there; apply() puts it back if another
program, such as a VPN daemon, inserted a chain before it), and nothing but other panels' jumps
may come before ours in DOCKER-USER and INPUT.

The container has no NET_ADMIN or NET_RAW and the rules live in the host's namespace, so
nothing inside a sandbox can lift them. `none` mode has no network to filter. The bridge has no
IPv6 (the panel creates it without, and refuses one that has it: engine.ensure_network), so
there is no second family to filter.

Fail closed: a sandbox in `internet` mode is started only when `verify()` finds the rules in
place (actions.run_start). The rules are applied when the panel starts (the events watcher, at
start and after every reconnect, so after a dockerd restart too), when the network is created,
within a second of a change by hand (the watcher reads `fingerprint()`: sandboxes.egress_watch),
and by the periodic check, which repairs and audits any difference it finds.
"""

import fcntl
import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
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
# The decision log (sandboxes.egress_log) reads refusals from the kernel's log, at most this many
# a second per bridge (a sandbox hammering a closed address fills nothing).
LOG_RATE = 20
LOG_BURST = 50
RESOLV_CONF = "/etc/resolv.conf"
# Where Docker reads the upstream servers when resolv.conf names only systemd-resolved's stub.
RESOLVED_CONF = "/run/systemd/resolve/resolv.conf"
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

    @property
    def deny(self) -> str:
        """Where every refusal goes: logged (at most LOG_RATE a second), then dropped."""
        return f"CCP-D-{self.bridge}"

    @property
    def log_prefix(self) -> str:
        return f"ccpd:{self.bridge} "

    @property
    def nat(self) -> str:
        """The allowlist bridge's: sends the container's DNS to the panel's resolver."""
        return f"CCP-N-{self.bridge}"

    @property
    def grants(self) -> str:
        """The allowlist bridge's ipset: (sandbox address, tcp port, destination network)."""
        return f"CCP-A-{self.bridge}"


def chains(bridge: str | None = None) -> Chains:
    return Chains(bridge or settings.SANDBOX_BRIDGE)


def allow_chains() -> Chains:
    return Chains(settings.SANDBOX_ALLOW_BRIDGE)


def allow_gateway() -> str:
    """The allowlist bridge's gateway, where the panel's resolver answers (Docker gives a
    network's gateway the first address of its subnet; engine.ensure_network asks for it)."""
    return str(next(ipaddress.IPv4Network(settings.SANDBOX_ALLOW_SUBNET).hosts()))


def bridge_present(bridge: str) -> bool:
    """The rules match the bridge by its name: it must exist under that name."""
    return os.path.isdir(f"/sys/class/net/{bridge}")


def enforced() -> bool:
    """Whether this panel filters egress (SANDBOX_EGRESS_RULES; on unless an admin turned it off)."""
    return bool(settings.SANDBOX_EGRESS_RULES)


def _nameservers(path: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read(65536).splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                found.append(ipaddress.ip_address(parts[1]))
            except ValueError:
                continue
    return found


def _docker_servers(path: str, resolved: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The name servers Docker reads for a container that names none: resolv.conf's, or
    systemd-resolved's upstreams when resolv.conf names only its local stub."""
    servers = _nameservers(path)
    if servers and all(a.is_loopback for a in servers) and os.path.exists(resolved):
        servers = _nameservers(resolved)
    return servers


def host_resolvers(path: str = RESOLV_CONF, resolved: str = RESOLVED_CONF, dropped: list[str] | None = None) -> list[str]:
    """The host's IPv4 name servers that lie in a dropped range: DNS to them (port 53 only)
    stays open. The servers Docker itself forwards to: resolv.conf's, or systemd-resolved's
    upstreams when resolv.conf names only its local stub."""
    servers = _docker_servers(path, resolved)
    nets = [ipaddress.ip_network(r) for r in (dropped if dropped is not None else BLOCKED_RANGES)]
    return sorted({str(a) for a in servers if a.version == 4 and not a.is_loopback and any(a in n for n in nets)})


def docker_upstreams(path: str = RESOLV_CONF, resolved: str = RESOLVED_CONF) -> list[str]:
    """The servers Docker's embedded DNS forwards a container's queries to when the container
    names none of its own: the host's IPv4 name servers (systemd-resolved's upstreams when
    resolv.conf names only its stub), or Google's, Docker's fallback. An allowlist sandbox that
    was moved there live still asks these: the allowlist bridge sends them to the resolver."""
    servers = _docker_servers(path, resolved)
    found = sorted({str(a) for a in servers if a.version == 4 and not a.is_loopback})
    return found or ["8.8.4.4", "8.8.8.8"]


def docker_asks_loopback(path: str = RESOLV_CONF, resolved: str = RESOLVED_CONF) -> bool:
    """Whether Docker's embedded DNS, for a container that names no server of its own, asks a
    loopback server of the host: it does so from the host's namespace, where no rule of ours
    sees it (so such a container is never moved into allowlist mode live)."""
    return any(a.is_loopback for a in _docker_servers(path, resolved))


def _ip(*args: str) -> str:
    try:
        return subprocess.run(["ip", "-4", "-o", *args], capture_output=True, text=True, timeout=TIMEOUT).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EgressError(f"ip failed: {exc}") from exc


def _interface_addresses() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """(device, address/prefix) of every IPv4 address of the host, on any interface."""
    found = []
    for line in _ip("addr", "show").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "inet":
            found.append((parts[1], ipaddress.IPv4Interface(parts[3])))
    return found


def lan_subnets() -> list[str]:
    """The IPv4 subnets of the interfaces that carry a default route: the network the host sits
    on, which a sandbox must not reach even when its addresses are public."""
    devices = set()
    for line in _ip("route", "show", "default").splitlines():
        parts = line.split()
        if "dev" in parts:
            devices.add(parts[parts.index("dev") + 1])
    found = set()
    for device, address in _interface_addresses():
        if device in devices and not any(address.network.subnet_of(ipaddress.IPv4Network(r)) for r in BLOCKED_RANGES):
            found.add(str(address.network))
    return sorted(found)


def host_addresses() -> list[str]:
    """Every IPv4 address of the host's own, on any interface (a VPN's, a test's): traffic to
    them goes to the host (INPUT), which refuses sandboxes whatever their list grants."""
    return sorted({str(address.ip) for _, address in _interface_addresses()})


def dropped_ranges() -> list[str]:
    return [*BLOCKED_RANGES, *lan_subnets()]


def wanted_rules(c: Chains, resolvers: list[str], dropped: list[str] | None = None, panel_dns: str | None = None) -> dict[str, list[str]]:
    """Each chain's rules, exactly as `iptables -S <chain>` prints them. `panel_dns`: the panel's
    resolver (on the allowlist bridge's gateway), which a sandbox moved here live from allowlist
    mode still asks, and which answers it as Docker's DNS would."""
    forward = [f"-A {c.forward} -o {c.bridge} -j {c.deny}"]
    for resolver in resolvers:
        for proto in ("udp", "tcp"):
            forward.append(f"-A {c.forward} -d {resolver}/32 -p {proto} -m {proto} --dport 53 -j RETURN")
    forward += [f"-A {c.forward} -d {net} -j {c.deny}" for net in (dropped if dropped is not None else BLOCKED_RANGES)]
    forward.append(f"-A {c.forward} -j RETURN")
    host = [f"-A {c.input} -d {panel_dns}/32 -p {proto} -m {proto} --dport 53 -j RETURN" for proto in ("udp", "tcp")] if panel_dns else []
    host += [
        f"-A {c.input} -m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY -j RETURN",
        f"-A {c.input} -j {c.deny}",
    ]
    deny = [
        f'-A {c.deny} -m limit --limit {LOG_RATE}/sec --limit-burst {LOG_BURST} -j LOG --log-prefix "{c.log_prefix}" --log-level 6',
        f"-A {c.deny} -j DROP",
    ]
    return {c.deny: deny, c.forward: forward, c.input: host}


def wanted_allow_rules(c: Chains, gateway: str, dropped: list[str] | None = None) -> dict[str, list[str]]:
    """The allowlist bridge's filter chains: nothing leaves but what the grants name (a sandbox's
    address, a TCP port, a destination), and never to another sandbox, port 53 or a dropped
    range, granted or not; the host answers only DNS, on the gateway, where the resolver is."""
    forward = [f"-A {c.forward} -o {c.bridge} -j {c.deny}"]
    forward += [f"-A {c.forward} -p {proto} -m {proto} --dport 53 -j {c.deny}" for proto in ("udp", "tcp")]
    forward.append(f"-A {c.forward} -m set ! --match-set {c.grants} src,dst,dst -j {c.deny}")
    forward += [f"-A {c.forward} -d {net} -j {c.deny}" for net in (dropped if dropped is not None else BLOCKED_RANGES)]
    forward.append(f"-A {c.forward} -j RETURN")
    host = [f"-A {c.input} -d {gateway}/32 -p {proto} -m {proto} --dport 53 -j RETURN" for proto in ("udp", "tcp")]
    host += [
        f"-A {c.input} -m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY -j RETURN",
        f"-A {c.input} -j {c.deny}",
    ]
    deny = [
        f'-A {c.deny} -m limit --limit {LOG_RATE}/sec --limit-burst {LOG_BURST} -j LOG --log-prefix "{c.log_prefix}" --log-level 6',
        f"-A {c.deny} -j DROP",
    ]
    return {c.deny: deny, c.forward: forward, c.input: host}


def wanted_allow_nat(c: Chains, gateway: str, upstreams: list[str]) -> list[str]:
    """The allowlist bridge's nat chain: a query to the servers Docker's embedded DNS uses goes
    to the panel's resolver instead; a query to any other server is dropped (forward chain)."""
    return [
        f"-A {c.nat} -d {server}/32 -p {proto} -m {proto} --dport 53 -j DNAT --to-destination {gateway}:53"
        for server in upstreams
        for proto in ("udp", "tcp")
    ]


def _wanted(c: Chains, dropped: list[str]) -> dict[str, list[str]]:
    if c.bridge == settings.SANDBOX_ALLOW_BRIDGE:
        return wanted_allow_rules(c, allow_gateway(), dropped)
    return wanted_rules(c, host_resolvers(dropped=dropped), dropped, panel_dns=allow_gateway())


def jumps(c: Chains) -> dict[str, str]:
    """The rule in each built-in chain of the filter table that sends the bridge's traffic to ours."""
    return {"DOCKER-USER": f"-i {c.bridge} -j {c.forward}", "INPUT": f"-i {c.bridge} -j {c.input}"}


NAT_PARENT = "PREROUTING"


def nat_jump(c: Chains) -> str:
    return f"-i {c.bridge} -j {c.nat}"


def _bridges() -> list[Chains]:
    return [chains(), allow_chains()]


def _iptables(*args: str, stdin: str | None = None, tool: str = "iptables") -> str:
    binary = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if binary is None:
        raise EgressError(f"{tool} is not installed; the egress rules cannot be applied (apt-get install iptables).")
    try:
        wait = ("-w", "10") if tool in ("iptables", "iptables-restore") else ()
        done = subprocess.run([binary, *wait, *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EgressError(f"{tool} failed: {exc}") from exc
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        reason = message[-1] if message else f"exit code {done.returncode}"
        if "Permission denied" in reason or "you must be root" in reason:
            reason += " (the panel must run as root to enforce egress rules, or set SANDBOX_EGRESS_RULES=false)"
        raise EgressError(f"{tool} {' '.join(args[:2])}: {reason}")
    return done.stdout


def _listed(chain: str, table: str = "filter") -> list[str] | None:
    """The rules of a chain as `iptables -S` prints them, or None when it does not exist."""
    try:
        out = _iptables("-t", table, "-S", chain)
    except EgressError as exc:
        # iptables-nft 1.8.9 calls a chain that does not exist "incompatible"; a real one that is
        # foreign to it is caught when apply() cannot replace it.
        if any(word in str(exc) for word in ("No chain", "does not exist", "incompatible")):
            return None
        raise
    return [line for line in out.splitlines() if line.startswith("-A ")]


def _snapshot(table: str = "filter") -> dict[str, list[str]]:
    """Every chain of a table with its rules, from one `iptables-save` (what `-S` would print,
    chain by chain, read at one moment): a start's check costs one process, not five."""
    chains_found: dict[str, list[str]] = {}
    for line in _iptables("-t", table, tool="iptables-save").splitlines():
        if line.startswith(":"):
            chains_found.setdefault(line[1:].split(" ", 1)[0], [])
        elif line.startswith("-A "):
            chains_found.setdefault(line.split(" ", 2)[1], []).append(line)
    return chains_found


def problems() -> list[str]:
    """What is wrong with the live rules of both bridges, in words; empty when they are exactly
    in place."""
    table = _snapshot()  # one reading of every chain, below
    dropped = dropped_ranges()
    found = _problems(chains(), table, dropped)
    a = allow_chains()
    wrong = _problems(a, table, dropped)
    nat = _snapshot("nat")
    live = nat.get(a.nat)
    if live is None:
        wrong.append(f"chain {a.nat} (nat) is missing")
    elif live != wanted_allow_nat(a, allow_gateway(), docker_upstreams()):
        wrong.append(f"chain {a.nat} (nat) differs from what it should be")
    if f"-A {NAT_PARENT} {nat_jump(a)}" not in (nat.get(NAT_PARENT) or []):
        wrong.append(f"the jump from {NAT_PARENT} (nat) to our chain is missing")
    header = _set_header(a.grants)
    if header is None or header[0] != GRANTS_TYPE:
        wrong.append(f"the ipset {a.grants} of {GRANTS_TYPE} is missing")
    elif not _header_ok(header[1]):
        wrong.append(f"the ipset {a.grants} was made with other options ({header[1]})")
    found += [f"{a.bridge}: {p}" for p in wrong]
    forward = table.get("FORWARD") or []
    if not forward or forward[0] != FORWARD_JUMP:
        found.append("DOCKER-USER is not the first rule of FORWARD" + (f" ({forward[0]} is)" if forward else ""))
    return found


def _problems(c: Chains, table: dict[str, list[str]], dropped: list[str]) -> list[str]:
    found = []
    for chain, rules in _wanted(c, dropped).items():
        live = table.get(chain)
        if live is None:
            found.append(f"chain {chain} is missing")
        elif live != rules:
            found.append(f"chain {chain} differs from what it should be")
    for parent, rule in jumps(c).items():
        live = table.get(parent)
        if live is None:
            found.append(f"chain {parent} is missing (or holds rules iptables cannot show)")
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
    return found


FORWARD_JUMP = "-A FORWARD -j DOCKER-USER"
# The built-in chains that lead to ours, by table: a change there may undo a jump of ours.
PARENTS = {"filter": ("INPUT", "FORWARD", "DOCKER-USER"), "nat": (NAT_PARENT,)}


def fingerprint() -> str:
    """Our chains and the built-in chains that jump to them, as iptables shows them now, from one
    `iptables-save` (counters left out): the events watcher compares it every half second to
    notice a change made by hand, and only then runs the full check (sandboxes.egress_watch)."""
    ours = {name for c in _bridges() for name in (c.forward, c.input, c.deny, c.nat)}
    kept, table = [], ""
    for line in _iptables(tool="iptables-save").splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith((":", "-A ")):
            chain = line[1:].split(" ", 1)[0] if line.startswith(":") else line.split(" ", 2)[1]
            if chain in ours or chain in PARENTS.get(table, ()):
                kept.append(f"{table} {line.split(' [', 1)[0]}")
    return "\n".join(kept)


@contextmanager
def _rules_lock() -> Iterator[None]:
    """Held while the rules are changed: the watcher's repair and the periodic one may meet, and
    _move_to_top deletes by position."""
    fd = os.open(os.path.join(settings.VAR_DIR, f"rules-{chains().bridge}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def apply() -> None:
    """Put the rules of both bridges in place, replacing each of our chains' content in one step
    (iptables-restore), then make sure the jumps to them come first."""
    with _rules_lock():
        _apply()


def _apply() -> None:
    table, nat = _snapshot(), _snapshot("nat")  # the parents' rules: restore leaves them as they are
    if "DOCKER-USER" not in table:
        # Never declared here: declaring a chain to iptables-restore empties it, and this one may
        # hold an admin's rules (or rules this iptables cannot show).
        raise EgressError("Docker's DOCKER-USER chain is missing or unreadable: is dockerd running, with its iptables rules on?")
    a = allow_chains()
    header = _set_header(a.grants)
    if header is not None and (header[0] != GRANTS_TYPE or not _header_ok(header[1])):
        # Made otherwise (by hand, or an older panel): made again. Meanwhile the forward chain
        # drops all of the allowlist bridge's traffic (replaced in one step, never empty).
        _iptables("--noflush", stdin=f"*filter\n:{a.forward} - [0:0]\n-A {a.forward} -j DROP\nCOMMIT\n", tool="iptables-restore")
        _ipset("destroy", a.grants)
        header = None
    if header is None:
        # The forward chain names the set: it must exist first.
        _ipset(
            "create",
            a.grants,
            GRANTS_TYPE,
            "timeout",
            str(settings.SANDBOX_ALLOW_MIN_SECONDS),
            "comment",
            "maxelem",
            str(GRANTS_MAXELEM),
            "-exist",
        )
        _forget_grants()
    dropped = dropped_ranges()
    wanted = {**_wanted(chains(), dropped), **_wanted(a, dropped)}
    lines = ["*filter"]
    lines += [f":{chain} - [0:0]" for chain in wanted]
    for rules in wanted.values():
        lines += rules
    lines += ["COMMIT", "*nat", f":{a.nat} - [0:0]", *wanted_allow_nat(a, allow_gateway(), docker_upstreams()), "COMMIT"]
    _iptables("--noflush", stdin="\n".join(lines) + "\n", tool="iptables-restore")
    for c in _bridges():
        for parent, rule in jumps(c).items():
            live = table.get(parent) or []
            ours = f"-A {parent} {rule}"
            if ours not in live:
                _iptables("-I", parent, "1", *rule.split())
            elif any(" -j CCP-" not in line for line in live[: live.index(ours)]):
                _move_to_top(parent, ours, rule)
    if f"-A {NAT_PARENT} {nat_jump(a)}" not in (nat.get(NAT_PARENT) or []):
        _iptables("-t", "nat", "-I", NAT_PARENT, "1", *nat_jump(a).split())
    forward = table.get("FORWARD") or []
    if FORWARD_JUMP not in forward:
        _iptables("-I", "FORWARD", "1", "-j", "DOCKER-USER")
    elif forward[0] != FORWARD_JUMP:
        _move_to_top("FORWARD", FORWARD_JUMP, "-j DOCKER-USER")


def _move_to_top(chain: str, listed: str, rule: str) -> None:
    """Insert the rule first, then delete its older copy by position: at no moment is it absent."""
    _iptables("-I", chain, "1", *rule.split())
    live = _listed(chain) or []
    later = [n for n, line in enumerate(live, start=1) if line == listed and n > 1]
    for n in reversed(later):
        _iptables("-D", chain, str(n))


def remove() -> None:
    """Take both bridges' rules away (tests, and an admin turning SANDBOX_EGRESS_RULES off); the
    allowlist bridge's grants go with them. Under the rules' lock: a repair meeting it half-way
    would put back rules that use the set it is about to destroy."""
    with _rules_lock():
        _remove()


def _remove() -> None:
    for c in _bridges():
        for parent, rule in jumps(c).items():
            while f"-A {parent} {rule}" in (_listed(parent) or []):
                _iptables("-D", parent, *rule.split())
        for chain in (c.forward, c.input, c.deny):  # the deny chain last: the others jump to it
            if _listed(chain) is not None:
                _iptables("-F", chain)
        for chain in (c.forward, c.input, c.deny):
            if _listed(chain) is not None:
                _iptables("-X", chain)
    a = allow_chains()
    while f"-A {NAT_PARENT} {nat_jump(a)}" in (_listed(NAT_PARENT, table="nat") or []):
        _iptables("-t", "nat", "-D", NAT_PARENT, *nat_jump(a).split())
    if _listed(a.nat, table="nat") is not None:
        _iptables("-t", "nat", "-F", a.nat)
        _iptables("-t", "nat", "-X", a.nat)
    if _set_header(a.grants) is not None:
        _ipset("destroy", a.grants)
    _forget_grants()


# --- The allowlist bridge's grants ---------------------------------------------------------------
# One ipset of (sandbox address, tcp:port, destination network) entries, each with a timeout (0:
# for good, a listed CIDR) and a comment naming the list entry that granted it (a name or a CIDR),
# so a list that changes takes back exactly what it no longer grants.
GRANTS_TYPE = "hash:ip,port,net"
GRANTS_MAXELEM = 262144
SET_FLAGS = {"comment", "counters", "skbinfo", "forceadd"}  # options without a value


def _header_ok(header: str) -> bool:
    """The set's options, as `ipset list -t` prints them, are the ones apply() makes it with."""
    tokens, options = header.split(), {}
    while tokens:
        key = tokens.pop(0)
        options[key] = "" if key in SET_FLAGS or not tokens else tokens.pop(0)
    return (
        options.get("family") == "inet" and options.get("maxelem") == str(GRANTS_MAXELEM) and "timeout" in options and "comment" in options
    )


GRANT_RE = re.compile(
    r"^add (?P<set>\S+) (?P<src>[0-9.]+),(?P<proto>[a-z0-9]+):(?P<port>\d+),(?P<dst>[0-9./]+)"
    r"(?: timeout (?P<timeout>\d+))?(?: .*?comment \"(?P<comment>[^\"]*)\")?"
)


@dataclass(frozen=True)
class Grant:
    source: str
    port: int
    destination: str  # an address or a CIDR
    comment: str
    timeout: int = 0  # seconds left; 0 for good
    proto: str = "tcp"  # the panel grants only TCP; another is a grant made by hand, taken back

    @property
    def element(self) -> str:
        return f"{self.source},{self.proto}:{self.port},{self.destination}"


def _ipset(*args: str, stdin: str | None = None) -> str:
    return _iptables(*args, stdin=stdin, tool="ipset")


def _set_header(name: str) -> tuple[str, str] | None:
    """The set's type and its header line (family, maxelem, timeout, comment...), or None."""
    try:
        out = _ipset("list", "-t", name)
    except EgressError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    found = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}
    return (found["Type"], found.get("Header", "")) if "Type" in found else None


def grants() -> list[Grant]:
    """Every grant in force on the allowlist bridge."""
    a = allow_chains()
    found = []
    for line in _ipset("save", a.grants).splitlines():
        match = GRANT_RE.match(line)
        if match and match["set"] == a.grants:
            dst = match["dst"] if "/" in match["dst"] else f"{match['dst']}/32"
            found.append(Grant(match["src"], int(match["port"]), dst, match["comment"] or "", int(match["timeout"] or 0), match["proto"]))
        elif line.startswith(f"add {a.grants} "):
            raise EgressError(f"the ipset {a.grants} holds an entry the panel cannot read: {line[:120]}")
    return found


@contextmanager
def grants_lock() -> Iterator[None]:
    """Held while grants are read and changed (the resolver, sync_grants), across processes: a
    grant decided on an old list never lands after the sync that takes it back."""
    fd = os.open(os.path.join(settings.VAR_DIR, f"grants-{allow_chains().bridge}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _forget_grants() -> None:
    """The set is new or gone: what the ledger knew of its elements went with them."""
    from . import grant_ledger  # imported here: it builds on this module

    with grants_lock():
        grant_ledger.forget_all()


def grant(new: list[Grant], seconds: int = 0) -> None:
    """Add (or renew) grants in one step: reachable for each grant's own timeout, else for
    `seconds` (0: for good)."""
    if new:
        a = allow_chains()
        lines = [f'add {a.grants} {g.element} timeout {g.timeout or seconds} comment "{comment(g.comment)}"' for g in new]
        _ipset("-exist", "restore", stdin="\n".join(lines) + "\n")


def comment(text: str) -> str:
    """A grant's comment as the set keeps it."""
    return re.sub(r"[^A-Za-z0-9.*/_-]", "", text)[:250]


def revoke(old: list[Grant]) -> None:
    if old:
        a = allow_chains()
        _ipset("-exist", "restore", stdin="".join(f"del {a.grants} {g.element}\n" for g in old))
