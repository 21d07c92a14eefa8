"""The allowlist mode's grants, kept true: which sandbox on the allowlist bridge may reach what.

The host's rules (sandboxes.network) let a packet from the allowlist bridge out only when a grant
names its source address, TCP port and destination. Grants come from two places: a listed CIDR
gives a grant for good while the sandbox runs; a listed name gives one when the panel's resolver
(sandboxes.network.resolver) hands out its address, for the answer's TTL plus a margin. `sync_grants`
takes back every grant whose source is no longer a running allowlist sandbox, or whose list no
longer names it, and adds the CIDR grants that are missing. It runs around every start, after
every change of mode or list, on the watcher's container events and in the periodic check.
"""

import logging

from django.core.exceptions import PermissionDenied
from django.db import transaction

from audit.services import audit_record
from teams.models import Team
from teams.permissions import Role, authorize
from teams.services import audit_team

from .. import engine, live, network
from ..models import Sandbox
from ..network import allowlist, grant_ledger
from .auditing import audit
from .errors import InvalidInput, SandboxError

log = logging.getLogger(__name__)


def _attached(network: str, mode: str, *, labels: tuple[str, ...] = ()) -> dict[str, tuple[int, list[str], str]]:
    """The sandboxes in `mode` attached to `network` (their containers carrying `labels`), by
    address: (pk, presets, own entries)."""
    docker = engine.engine_for()
    try:
        containers = docker.inspect_network(network).get("Containers") or {}
        if labels:
            having = set(docker.containers_on_network(network, labels=labels))
            containers = {cid: info for cid, info in containers.items() if cid in having}
    except engine.NotFound:
        return {}
    rows = Sandbox.objects.filter(container_id__in=list(containers), network_mode=mode).values_list(
        "container_id", "pk", "egress_presets", "egress_allow", "team__egress_allow"
    )
    found = {}
    for container_id, pk, presets, text, team_text in rows:
        address = (containers[container_id].get("IPv4Address") or "").split("/")[0]
        if address:  # its own entries, then its team's
            found[address] = (pk, presets or [], "\n".join(filter(None, [text, team_text])))
    return found


def allowlist_clients() -> dict[str, tuple[int, list[allowlist.Entry]]]:
    """Every sandbox attached to the allowlist bridge and in allowlist mode, by its address:
    (its pk, the entries in force for it)."""
    attached = _attached(network.allowlist_bridge().network, Sandbox.Network.ALLOWLIST)
    return {a: (pk, allowlist.effective(p, t)) for a, (pk, p, t) in attached.items()}


def resolver_clients() -> dict[str, tuple[int, list[allowlist.Entry] | None]]:
    """Whom the panel's resolver answers: the allowlist sandboxes (by their lists) and, plainly,
    the internet-mode ones whose container was made to ask it (moved out of allowlist mode live);
    no other internet-mode sandbox."""
    moved = _attached(network.internet_bridge().network, Sandbox.Network.INTERNET, labels=(f"{engine.LABEL_DNS}=panel",))
    found: dict[str, tuple[int, list[allowlist.Entry] | None]] = {a: (pk, None) for a, (pk, _, _) in moved.items()}
    found.update(allowlist_clients())
    return found


def proxy_clients() -> dict[str, tuple[int, int, str, list[allowlist.Entry] | None]]:
    """Whom the credential proxy serves: every sandbox on the internet or the allowlist bridge in
    that bridge's mode, by address: (pk, team pk, mode, its entries in force; None in internet mode)."""
    found: dict[str, tuple[int, int, str, list[allowlist.Entry] | None]] = {}
    for bridge in network.bridges_table():
        attached = _attached(bridge.network, bridge.mode)
        teams = dict(Sandbox.objects.filter(pk__in=[pk for pk, _, _ in attached.values()]).values_list("pk", "team_id"))
        for address, (pk, presets, text) in attached.items():
            entries = allowlist.effective(presets, text) if bridge.mode == Sandbox.Network.ALLOWLIST else None
            found[address] = (pk, teams.get(pk, 0), bridge.mode, entries)
    return found


def sync_grants() -> int:
    """Make the grants match the running allowlist sandboxes and their lists; returns how many
    changed. Without the set (rules not applied) there is nothing to keep: the start check and
    the periodic repair see to the rules first."""
    if not network.enforced() or not engine.engine_for().host.is_local:
        return 0
    with network.grants_lock():  # the resolver grants under it too: no grant lands after this
        return _sync_grants(allowlist_clients())


def _sync_grants(clients: dict[str, tuple[int, list[allowlist.Entry]]]) -> int:
    wanted = {
        network.Grant(address, port, str(e.network), e.text)
        for address, (_, entries) in clients.items()
        for e in entries
        if e.network is not None
        for port in e.ports
    }
    kept, stale, renewed = set(), [], []
    with grant_ledger.opened() as ledger:
        holders = ledger.everything()
        for g in network.grants():
            who = clients.get(g.source)
            key = network.Grant(g.source, g.port, g.destination, g.comment)
            if who is None or g.proto != "tcp":
                stale.append(g)
            elif g.timeout == 0:  # a listed CIDR's
                if key in wanted:
                    kept.add(key)
                else:
                    stale.append(g)
            elif (now := _name_grant(g, who, holders.get((g.source, g.port, g.destination), []))) is None:
                stale.append(g)
            elif network.comment(now.comment) != g.comment:  # its name is off the list, another listed name holds the address
                renewed.append(now)
        network.revoke(stale)
        missing = [g for g in wanted if g not in kept]
        network.grant(missing + renewed, 0)
        ledger.keep_only(clients)
    return len(stale) + len(missing) + len(renewed)


def _name_grant(g: network.Grant, who: tuple[int, list[allowlist.Entry]], holders: list[grant_ledger.Holder]) -> network.Grant | None:
    """What a name's grant (one address) should be now: as the names the sandbox still lists
    hold it (sandboxes.network.grant_ledger), or None. One the ledger knows nothing of (it forgot it, or
    an older panel granted it) stands while the name in its comment gives that port."""
    if not g.destination.endswith("/32"):
        return None
    if not holders:
        return g if g.port in allowlist.ports_for(g.comment, who[1]) else None
    return grant_ledger.grant_for((g.source, g.port, g.destination), holders, sandbox=who[0], entries=who[1])


def grants_repair() -> None:
    """sync_grants, logged rather than raised: for the periodic check, the watcher's container
    events and the end of a stop (a sandbox that stopped while nobody watched loses its grants).
    With the rules turned off, the allowlist bridge is the open internet: nothing stays on it."""
    if not engine.engine_for().host.is_local:
        return
    if not network.enforced():
        from .reconcile import stop_networked

        stop_networked(
            "Stopped: allowlist mode needs the egress rules, and SANDBOX_EGRESS_RULES is off.", (network.allowlist_bridge().network,)
        )
        return
    try:
        with network.grants_lock():
            clients = allowlist_clients()
            _sync_grants(clients)
    except (network.EgressError, engine.EngineError) as exc:
        log.error("the allowlist grants could not be brought in line: %s", exc)
        return
    if clients:
        _check_resolver()


def _check_resolver() -> None:
    """Running allowlist sandboxes ask only the panel's resolver: if something else holds its
    port (the watcher died and a dnsmasq took it), they stop. The resolver merely not answering
    (the panel is stopped) leaves them running: they resolve nothing new."""
    from ..network import resolver
    from .reconcile import stop_networked

    why = resolver.probe()
    if why and "something other than" in why:
        bridge = network.allowlist_bridge()
        log.error("allowlist sandboxes stopped: %s", why)
        audit_record(actor=None, actor_name="egress", action="egress.resolver_impostor", target=bridge.bridge, details={"error": why})
        stop_networked(f"Stopped: {why}.", (bridge.network,))


def allowlist_errors(presets: list[str], text: str) -> list[str]:
    """What is wrong with a list about to be saved, in words: its own entries, its presets, and
    any CIDR that names the host itself or its LAN (read now: the host's addresses change)."""
    entries, errors = allowlist.parse(text)
    errors += allowlist.presets_errors(presets)
    if any(e.network is not None for e in entries):
        try:
            errors += allowlist.host_errors(entries, addresses=network.host_addresses(), lans=network.lan_subnets())
        except network.EgressError as exc:
            errors.append(f"The host's own addresses cannot be read ({exc}), so the IPv4 entries cannot be judged; try again.")
    return errors


# How far each network mode reaches: moving up widens a sandbox's egress.
MODE_REACH: dict[str, int] = {Sandbox.Network.NONE: 0, Sandbox.Network.ALLOWLIST: 1, Sandbox.Network.INTERNET: 2}
WIDEN_REFUSED = (
    "Only the team's admins may widen a sandbox's egress ({what}); operators may narrow it (to no network, or by removing entries)."
)


class WideningRefused(PermissionDenied):
    """An operator's attempt to widen a sandbox's egress (a 403; the page shows its message)."""


Grant = tuple[str, int, frozenset[str], str]  # name or network as written, port, methods, path


def _grants(presets: list[str], text: str) -> set[Grant]:
    """What a list reaches: (entry, port, HTTP methods, path pattern); no methods and an empty
    or "/*" path mean any request."""
    return {
        (e.text, port, frozenset(m.upper() for m in e.methods), "" if e.path in ("", "/*") else e.path)
        for e in allowlist.effective(presets, text)
        for port in e.ports
    }


def _covered(grant: Grant, before: set[Grant]) -> bool:
    """Whether a grant reaches no further than one the list had: the same entry and port, with
    its methods among that one's (or that one any method) and that one's path (or any path)."""
    text, port, methods, path = grant
    return any(
        (text, port) == (t, p) and (not m or (methods and methods <= m)) and (not old_path or path == old_path)
        for t, p, m, old_path in before
    )


def authorize_egress(
    actor, sandbox: Sandbox, *, mode: str | None = None, presets: list[str] | None = None, allow: str | None = None
) -> None:
    """The one rule for every change of a sandbox's network mode or list (page, API, ccpanel,
    a live change, a one-click approval): operators of its team may narrow it, only its admins
    may widen it: a mode that reaches further, or an entry, port or preset the list did not
    grant (a name already covered by a listed wildcard still counts as new). PermissionDenied
    says which."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    widened = []
    if mode is not None and MODE_REACH.get(mode, 0) > MODE_REACH.get(sandbox.network_mode, 0):
        widened.append(f"to {mode}")
    if presets is not None and allow is not None:
        before = _grants(sandbox.egress_presets or [], sandbox.egress_allow)
        added = [g for g in _grants(presets, allow) if not _covered(g, before)]  # an HTTP rule lifted widens too
        if added:
            shown = ", ".join(sorted(f"{name}:{port}" for name, port, _m, _p in added)[:5])
            widened.append(f"adding {shown}{' and more' if len(added) > 5 else ''}")
    if widened:
        try:
            authorize(actor, sandbox.team, Role.ADMIN)
        except PermissionDenied:
            raise WideningRefused(WIDEN_REFUSED.format(what="; ".join(widened))) from None


def sandbox_set_allowlist(
    *, actor, sandbox: Sandbox, presets: list[str], allow: str, source_ip: str | None = None, why: dict | None = None
) -> Sandbox:
    """Change what the sandbox's allowlist grants. In force at once for a running allowlist
    sandbox: the resolver reads the list at its next question (within a second), and the grants
    the list no longer names are taken back before this returns."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    presets = sorted(set(presets))
    if errors := allowlist_errors(presets, allow):
        raise InvalidInput({"egress_allow": errors})
    authorize_egress(actor, sandbox, presets=presets, allow=allow)
    if sandbox.on_hold:
        raise SandboxError(f"{sandbox.name} is held by an open incident; its network changes only through the incident.")
    with transaction.atomic():
        row = Sandbox.objects.select_for_update().get(pk=sandbox.pk)
        authorize_egress(actor, row, presets=presets, allow=allow)  # against the list as saved: the caller's copy may be older
        before = {"presets": row.egress_presets, "entries": len(allowlist.parse(row.egress_allow)[0])}
        Sandbox.objects.filter(pk=sandbox.pk).update(egress_presets=presets, egress_allow=allow.strip())
        sandbox.egress_presets, sandbox.egress_allow = presets, allow.strip()
        after = {"presets": presets, "entries": len(allowlist.parse(allow)[0])}
        audit(actor, "sandbox.allowlist_changed", sandbox, {"from": before, "to": after, **(why or {})}, source_ip)
    if sandbox.network_mode == Sandbox.Network.ALLOWLIST:
        try:
            sync_grants()
        except (network.EgressError, engine.EngineError) as exc:
            raise SandboxError(
                f"The list is saved, but the grants could not be brought in line ({exc}); the periodic check retries."
            ) from exc
    live.sandbox_changed(sandbox)
    return sandbox


def sandbox_allow_refused(
    *, actor, sandbox: Sandbox, name: str, port: int | None = None, to_team: bool = False, source_ip: str | None = None
) -> str:
    """One click from the refused-connections card: add `name` (with `port`; 443 when none) to
    the sandbox's list through sandbox_set_allowlist (its checks, the widening rule: team admins
    only, its audit event, which names what was approved), or with `to_team` to its team's
    list through team_set_allowlist. In force within a second for a running allowlist sandbox
    (the resolver reads the lists at each question). Returns the entry added ("" when the list
    already grants it)."""
    name = (name or "").strip().rstrip(".").lower()
    if port is not None and not 0 < port < 65536:
        raise InvalidInput({"port": ["A port is a number from 1 to 65535."]})
    entry = f"{name}:{port}" if port else name
    entries, errors = allowlist.parse(entry)
    if errors or len(entries) != 1 or not entries[0].name or entries[0].name.startswith("*."):
        raise InvalidInput({"name": errors or [f"{name[:100]!r} is not a name that can be allowed."]})
    if to_team:
        team = Team.objects.get(pk=sandbox.team_id)
        if {(entries[0].text, p, frozenset(), "") for p in entries[0].ports} <= _grants([], team.egress_allow):
            authorize(actor, team, Role.ADMIN)
            return ""
        text = "\n".join(filter(None, [team.egress_allow.strip(), entry]))
        team_set_allowlist(actor=actor, team=team, allow=text, source_ip=source_ip, why={"approved": entry, "from_sandbox": sandbox.name})
        return entry
    row = Sandbox.objects.get(pk=sandbox.pk)
    if {(entries[0].text, p, frozenset(), "") for p in entries[0].ports} <= _grants(row.egress_presets or [], row.egress_allow):
        authorize(actor, sandbox.team, Role.OPERATOR)
        return ""
    text = "\n".join(filter(None, [row.egress_allow.strip(), entry]))
    sandbox_set_allowlist(
        actor=actor, sandbox=row, presets=row.egress_presets or [], allow=text, source_ip=source_ip, why={"approved": entry}
    )
    sandbox.egress_allow = row.egress_allow
    return entry


def team_set_allowlist(*, actor, team: Team, allow: str, source_ip: str | None = None, why: dict | None = None) -> Team:
    """Set the team's allowlist: entries in force for every allowlist-mode sandbox of the team
    besides its own. The team's admins only (it reaches every sandbox of the team, so any
    change is theirs); checked as a sandbox's list is, audited, in force within a second."""
    authorize(actor, team, Role.ADMIN)
    if errors := allowlist_errors([], allow):
        raise InvalidInput({"egress_allow": errors})
    with transaction.atomic():
        row = Team.objects.select_for_update().get(pk=team.pk)
        before = len(allowlist.parse(row.egress_allow)[0])
        Team.objects.filter(pk=team.pk).update(egress_allow=allow.strip())
        team.egress_allow = allow.strip()
        details = {"from": {"entries": before}, "to": {"entries": len(allowlist.parse(allow)[0])}, **(why or {})}
        audit_team(actor, "team.allowlist_changed", team, details, source_ip)
    try:
        sync_grants()
    except (network.EgressError, engine.EngineError) as exc:
        raise SandboxError(f"The list is saved, but the grants could not be brought in line ({exc}); the periodic check retries.") from exc
    return team
