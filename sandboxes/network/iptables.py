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
within a second of a change by hand (the watcher reads `fingerprint()`: sandboxes.network.watch),
and by the periodic check, which repairs and audits any difference it finds.
"""

from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager

from django.conf import settings

from . import bridges
from .commands import EgressError, host_lock, run_ipset, run_iptables
from .host import dropped_ranges
from .ipset import GRANTS_MAXELEM, GRANTS_TYPE, forget_grants, header_ok, set_header
from .nameservers import docker_upstreams, host_resolvers
from .rules import (
    FORWARD_JUMP,
    NAT_PARENT,
    PARENTS,
    Chains,
    allow_chains,
    allow_gateway,
    chains,
    jumps,
    nat_jump,
    proxy_address,
    wanted_allow_nat,
    wanted_allow_rules,
    wanted_rules,
)


def _wanted(c: Chains, dropped: list[str]) -> dict[str, list[str]]:
    if c == allow_chains():
        return wanted_allow_rules(c, allow_gateway(), dropped, proxy=proxy_address(allow_gateway()))
    return wanted_rules(
        c, host_resolvers(dropped=dropped), dropped, panel_dns=allow_gateway(), proxy=proxy_address(bridges.internet_bridge().gateway)
    )


def _bridges() -> list[Chains]:
    return [Chains(b.bridge) for b in bridges.table()]


def _listed(chain: str, table: str = "filter") -> list[str] | None:
    """The rules of a chain as `iptables -S` prints them, or None when it does not exist."""
    try:
        out = run_iptables("-t", table, "-S", chain)
    except EgressError as exc:
        # iptables-nft 1.8.9 calls a chain that does not exist "incompatible"; a real one that is
        # foreign to it is caught when apply() cannot replace it.
        if any(word in str(exc) for word in ("No chain", "does not exist", "incompatible")):
            return None
        raise
    return [line for line in out.splitlines() if line.startswith("-A ")]


def _snapshot() -> dict[str, dict[str, list[str]]]:
    """Every chain of every table with its rules, {table: {chain: rules}}, from one
    `iptables-save` (what `-S` would print, chain by chain, read at one moment): a start's check
    costs one process, not one per table and chain."""
    tables: dict[str, dict[str, list[str]]] = {}
    chains_found: dict[str, list[str]] = {}
    for line in run_iptables(tool="iptables-save").splitlines():
        if line.startswith("*"):
            chains_found = tables.setdefault(line[1:].strip(), {})
        elif line.startswith(":"):
            chains_found.setdefault(line[1:].split(" ", 1)[0], [])
        elif line.startswith("-A "):
            chains_found.setdefault(line.split(" ", 2)[1], []).append(line)
    return tables


def problems() -> list[str]:
    """What is wrong with the live rules of both bridges, in words; empty when they are exactly
    in place. What it reads (the tables, the host's routes and addresses, the grants' set) is
    read at once, in three threads: every start waits for this, so for the slowest of the
    processes rather than for their sum."""
    a = allow_chains()
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="egress-check") as reading:
        snapshot, dropped_read, header_read = (
            reading.submit(_snapshot),
            reading.submit(dropped_ranges),
            reading.submit(set_header, a.grants),
        )
    tables, dropped, header = snapshot.result(), dropped_read.result(), header_read.result()
    table, nat = tables.get("filter", {}), tables.get("nat", {})
    found = _problems(chains(), table, dropped)
    wrong = _problems(a, table, dropped)
    live = nat.get(a.nat)
    if live is None:
        wrong.append(f"chain {a.nat} (nat) is missing")
    elif live != wanted_allow_nat(a, allow_gateway(), docker_upstreams()):
        wrong.append(f"chain {a.nat} (nat) differs from what it should be")
    if f"-A {NAT_PARENT} {nat_jump(a)}" not in (nat.get(NAT_PARENT) or []):
        wrong.append(f"the jump from {NAT_PARENT} (nat) to our chain is missing")
    if header is None or header[0] != GRANTS_TYPE:
        wrong.append(f"the ipset {a.grants} of {GRANTS_TYPE} is missing")
    elif not header_ok(header[1]):
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


def fingerprint() -> str:
    """Our chains and the built-in chains that jump to them, as iptables shows them now, from one
    `iptables-save` (counters left out): the events watcher compares it every half second to
    notice a change made by hand, and only then runs the full check (sandboxes.network.watch)."""
    ours = {name for c in _bridges() for name in (c.forward, c.input, c.deny, c.nat)}
    kept, table = [], ""
    for line in run_iptables(tool="iptables-save").splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith((":", "-A ")):
            chain = line[1:].split(" ", 1)[0] if line.startswith(":") else line.split(" ", 2)[1]
            if chain in ours or chain in PARENTS.get(table, ()):
                kept.append(f"{table} {line.split(' [', 1)[0]}")
    return "\n".join(kept)


def _rules_lock() -> AbstractContextManager[None]:
    """Held while the rules are changed: the watcher's repair and the periodic one may meet, and
    _move_to_top deletes by position."""
    return host_lock(f"rules-{chains().bridge}")


def apply() -> None:
    """Put the rules of both bridges in place, replacing each of our chains' content in one step
    (iptables-restore), then make sure the jumps to them come first."""
    with _rules_lock():
        _apply()


def _apply() -> None:
    tables = _snapshot()  # the parents' rules: restore leaves them as they are
    table, nat = tables.get("filter", {}), tables.get("nat", {})
    if "DOCKER-USER" not in table:
        # Never declared here: declaring a chain to iptables-restore empties it, and this one may
        # hold an admin's rules (or rules this iptables cannot show).
        raise EgressError("Docker's DOCKER-USER chain is missing or unreadable: is dockerd running, with its iptables rules on?")
    a = allow_chains()
    header = set_header(a.grants)
    if header is not None and (header[0] != GRANTS_TYPE or not header_ok(header[1])):
        # Made otherwise (by hand, or an older panel): made again. Meanwhile the forward chain
        # drops all of the allowlist bridge's traffic (replaced in one step, never empty).
        run_iptables("--noflush", stdin=f"*filter\n:{a.forward} - [0:0]\n-A {a.forward} -j DROP\nCOMMIT\n", tool="iptables-restore")
        run_ipset("destroy", a.grants)
        header = None
    if header is None:
        # The forward chain names the set: it must exist first.
        run_ipset(
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
        forget_grants()
    dropped = dropped_ranges()
    wanted = {**_wanted(chains(), dropped), **_wanted(a, dropped)}
    lines = ["*filter"]
    lines += [f":{chain} - [0:0]" for chain in wanted]
    for rules in wanted.values():
        lines += rules
    lines += ["COMMIT", "*nat", f":{a.nat} - [0:0]", *wanted_allow_nat(a, allow_gateway(), docker_upstreams()), "COMMIT"]
    run_iptables("--noflush", stdin="\n".join(lines) + "\n", tool="iptables-restore")
    for c in _bridges():
        for parent, rule in jumps(c).items():
            live = table.get(parent) or []
            ours = f"-A {parent} {rule}"
            if ours not in live:
                run_iptables("-I", parent, "1", *rule.split())
            elif any(" -j CCP-" not in line for line in live[: live.index(ours)]):
                _move_to_top(parent, ours, rule)
    if f"-A {NAT_PARENT} {nat_jump(a)}" not in (nat.get(NAT_PARENT) or []):
        run_iptables("-t", "nat", "-I", NAT_PARENT, "1", *nat_jump(a).split())
    forward = table.get("FORWARD") or []
    if FORWARD_JUMP not in forward:
        run_iptables("-I", "FORWARD", "1", "-j", "DOCKER-USER")
    elif forward[0] != FORWARD_JUMP:
        _move_to_top("FORWARD", FORWARD_JUMP, "-j DOCKER-USER")


def _move_to_top(chain: str, listed: str, rule: str) -> None:
    """Insert the rule first, then delete its older copy by position: at no moment is it absent."""
    run_iptables("-I", chain, "1", *rule.split())
    live = _listed(chain) or []
    later = [n for n, line in enumerate(live, start=1) if line == listed and n > 1]
    for n in reversed(later):
        run_iptables("-D", chain, str(n))


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
                run_iptables("-D", parent, *rule.split())
        for chain in (c.forward, c.input, c.deny):  # the deny chain last: the others jump to it
            if _listed(chain) is not None:
                run_iptables("-F", chain)
        for chain in (c.forward, c.input, c.deny):
            if _listed(chain) is not None:
                run_iptables("-X", chain)
    a = allow_chains()
    while f"-A {NAT_PARENT} {nat_jump(a)}" in (_listed(NAT_PARENT, table="nat") or []):
        run_iptables("-t", "nat", "-D", NAT_PARENT, *nat_jump(a).split())
    if _listed(a.nat, table="nat") is not None:
        run_iptables("-t", "nat", "-F", a.nat)
        run_iptables("-t", "nat", "-X", a.nat)
    if set_header(a.grants) is not None:
        run_ipset("destroy", a.grants)
    forget_grants()
