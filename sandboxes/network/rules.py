"""The rules themselves, as plain values: the chains named after a bridge and the lines
`iptables -S` prints for each of them when they are in place. Nothing here runs a command."""

from dataclasses import dataclass

from .bridges import allowlist_bridge, internet_bridge

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
# The decision log (sandboxes.network.decision_log) reads refusals from the kernel's log, at most this many
# a second per bridge (a sandbox hammering a closed address fills nothing).
LOG_RATE = 20
LOG_BURST = 50


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
    """The chains of `bridge`, by default the internet mode's (sandboxes.network.bridges)."""
    return Chains(bridge or internet_bridge().bridge)


def allow_chains() -> Chains:
    return Chains(allowlist_bridge().bridge)


def allow_gateway() -> str:
    """The allowlist bridge's gateway, where the panel's resolver answers."""
    return allowlist_bridge().gateway


def wanted_rules(
    c: Chains, resolvers: list[str], dropped: list[str] | None = None, panel_dns: str | None = None, proxy: str | None = None
) -> dict[str, list[str]]:
    """Each chain's rules, exactly as `iptables -S <chain>` prints them. `panel_dns`: the panel's
    resolver (on the allowlist bridge's gateway), which a sandbox moved here live from allowlist
    mode still asks, and which answers it as Docker's DNS would. `proxy`: "address:port" of the
    credential proxy on this bridge's gateway, the one other thing of the host a sandbox reaches."""
    dns = [f"-A {c.forward} -d {server}/32 -p {proto} -m {proto} --dport 53 -j RETURN" for server in resolvers for proto in ("udp", "tcp")]
    return _chains(c, dns, dropped, panel_dns, proxy)


def wanted_allow_rules(c: Chains, gateway: str, dropped: list[str] | None = None, proxy: str | None = None) -> dict[str, list[str]]:
    """The allowlist bridge's filter chains: nothing leaves but what the grants name (a sandbox's
    address, a TCP port, a destination), and never to another sandbox, port 53 or a dropped
    range, granted or not; the host answers only DNS, on the gateway, where the resolver is."""
    only_granted = [f"-A {c.forward} -p {proto} -m {proto} --dport 53 -j {c.deny}" for proto in ("udp", "tcp")]
    only_granted.append(f"-A {c.forward} -m set ! --match-set {c.grants} src,dst,dst -j {c.deny}")
    return _chains(c, only_granted, dropped, gateway, proxy)


def proxy_address(bridge_gateway: str) -> str:
    """The credential proxy's "address:port" on a bridge (sandboxes.network.proxy)."""
    from django.conf import settings

    return f"{bridge_gateway}:{settings.SANDBOX_PROXY_PORT}"


def _chains(
    c: Chains, forward_checks: list[str], dropped: list[str] | None, panel_dns: str | None, proxy: str | None = None
) -> dict[str, list[str]]:
    """The chains of either bridge, which differ only in `forward_checks`: what the forward
    chain decides between refusing traffic to another sandbox and refusing the dropped ranges.
    The host is reached only for DNS on `panel_dns` and for replies to what it opened; every
    refusal is logged (at most LOG_RATE a second), then dropped."""
    forward = [f"-A {c.forward} -o {c.bridge} -j {c.deny}", *forward_checks]
    forward += [f"-A {c.forward} -d {net} -j {c.deny}" for net in (dropped if dropped is not None else BLOCKED_RANGES)]
    forward.append(f"-A {c.forward} -j RETURN")
    host = [f"-A {c.input} -d {panel_dns}/32 -p {proto} -m {proto} --dport 53 -j RETURN" for proto in ("udp", "tcp")] if panel_dns else []
    if proxy:
        address, _, port = proxy.rpartition(":")
        host.append(f"-A {c.input} -d {address}/32 -p tcp -m tcp --dport {port} -j RETURN")
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


def jumps(c: Chains) -> dict[str, str]:
    """The rule in each built-in chain of the filter table that sends the bridge's traffic to ours."""
    return {"DOCKER-USER": f"-i {c.bridge} -j {c.forward}", "INPUT": f"-i {c.bridge} -j {c.input}"}


NAT_PARENT = "PREROUTING"


def nat_jump(c: Chains) -> str:
    return f"-i {c.bridge} -j {c.nat}"


FORWARD_JUMP = "-A FORWARD -j DOCKER-USER"
# The built-in chains that lead to ours, by table: a change there may undo a jump of ours.
PARENTS = {"filter": ("INPUT", "FORWARD", "DOCKER-USER"), "nat": (NAT_PARENT,)}
