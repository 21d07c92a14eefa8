"""The one answer to "may a sandbox in this network mode be on its network now?", and why.

Asked by the three places that put a sandbox on a network or say whether it should be there:
a start (services.actions: fail closed before Docker starts the container), a live change of
mode (services.network, before the container is moved) and the security checklist (whose
"egress rules in place" check passes exactly when the decision says the sandbox is contained).
Each frames the reason its own way (an error, a message, a check's detail), never decides
anything of its own.
"""

from dataclasses import dataclass

from . import bridges, commands, host, iptables, proxy_ca

ALLOWLIST_NEEDS_RULES = "Allowlist mode needs the host's egress rules, and SANDBOX_EGRESS_RULES is off."
UNFILTERED = "filtering is turned off (SANDBOX_EGRESS_RULES=false)"
REMOTE_ENGINE = (
    "The egress rules can only be enforced on this machine's own Docker engine; "
    "use `none` network mode, or set SANDBOX_EGRESS_RULES=false to accept unfiltered egress."
)


@dataclass(frozen=True)
class Decision:
    """`allowed`: it may be on its network now. `contained`: what it reaches is only what the
    panel's rules let through (no network, or its rules exactly in place); an internet-mode
    sandbox with filtering turned off is allowed but not contained. `reason`: a sentence when
    refused (the error a caller shows), a short note when allowed. `problems`: what is wrong
    with the rules, when that is why it is refused (a start audits them)."""

    allowed: bool
    contained: bool
    reason: str
    problems: tuple[str, ...] = ()


def may_join(mode: str, *, local_engine: bool, bridge_made: bool = False) -> Decision:
    """Whether a sandbox in network `mode`, on an engine that is (`local_engine`) or is not this
    machine's, may be on its network now. `bridge_made`: its network was made already (a start,
    after ensure_network), so its bridge must exist under its name too."""
    bridge = bridges.bridge_of(mode)
    if bridge is None:
        return Decision(True, True, "no network")
    allowlist = bridge == bridges.allowlist_bridge()
    if not host.enforced():
        if allowlist:  # without the rules the allowlist bridge is the open internet: never
            return Decision(False, False, ALLOWLIST_NEEDS_RULES)
        return Decision(True, False, UNFILTERED)
    if not local_engine:  # the rules are this machine's; another engine's bridge has none
        return Decision(False, False, REMOTE_ENGINE)
    wrong = _problems(bridge, allowlist=allowlist, bridge_made=bridge_made)
    if wrong:
        return Decision(False, False, f"The egress rules for {bridge.bridge} are not in place ({'; '.join(wrong)}).", tuple(wrong))
    return Decision(True, True, "in place")


def _problems(bridge: bridges.Bridge, *, allowlist: bool, bridge_made: bool) -> list[str]:
    """What keeps a sandbox off `bridge`, in words: the rules of both bridges not exactly in
    place, its bridge missing under its name, for the allowlist bridge, the panel's own
    resolver not holding its port (its names would be asked of somebody else), and where
    sandboxes are pointed at the credential proxy, the panel's own proxy not holding its port."""
    try:
        wrong = iptables.problems()
    except commands.EgressError as exc:
        wrong = [str(exc)]
    if bridge_made and not host.bridge_present(bridge.bridge):
        wrong.append(f"the bridge interface {bridge.bridge} is missing (renamed?), so the rules match nothing")
    if allowlist:
        from . import resolver  # the watcher's; it brings dnslib and the models

        if why := resolver.probe():
            wrong.append(why)
    if proxy_ca.proxied(bridge.mode):
        from . import proxy

        if why := proxy.probe(bridge.gateway):
            wrong.append(why)
    return wrong
