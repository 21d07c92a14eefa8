"""The gate a start, a live change of mode and the security checklist all ask (network.may_join):
each of its answers, with the host's rules, bridges and resolver stood in for (no Docker, no
iptables)."""

import pytest

from sandboxes import network
from sandboxes.network import host, iptables, resolver

RULES_WRONG = "the jump from INPUT to our chain is missing"
IMPOSTOR = "something other than the panel's resolver answers on 172.30.0.1:53 (UDP)"


@pytest.fixture
def machine(monkeypatch, settings):
    """A host that filters egress, with its rules in place, both bridges present and the panel's
    resolver answering; each test breaks one of these."""
    settings.SANDBOX_EGRESS_RULES = True
    state = {"problems": [], "bridges": {b.bridge for b in network.bridges.table()}, "probe": None, "probed": 0}

    def problems():
        if isinstance(state["problems"], Exception):
            raise state["problems"]
        return list(state["problems"])

    def probe():
        state["probed"] += 1
        return state["probe"]

    monkeypatch.setattr(iptables, "problems", problems)
    monkeypatch.setattr(host, "bridge_present", lambda name: name in state["bridges"])
    monkeypatch.setattr(resolver, "probe", probe)
    return state


@pytest.mark.parametrize("local_engine", [True, False])
def test_no_network_is_always_allowed_and_contained(machine, settings, local_engine):
    settings.SANDBOX_EGRESS_RULES = False  # whatever the rules
    machine["problems"] = [RULES_WRONG]
    assert network.may_join("none", local_engine=local_engine) == network.Decision(True, True, "no network")


def test_with_rules_in_place_both_modes_are_allowed_and_contained(machine):
    for mode in ("internet", "allowlist"):
        assert network.may_join(mode, local_engine=True, bridge_made=True) == network.Decision(True, True, "in place")
    assert machine["probed"] == 1  # the resolver is asked for allowlist mode only


def test_with_filtering_off_internet_mode_is_allowed_unfiltered_and_allowlist_mode_never(machine, settings):
    settings.SANDBOX_EGRESS_RULES = False
    internet = network.may_join("internet", local_engine=False)
    assert internet.allowed and not internet.contained
    assert internet.reason == "filtering is turned off (SANDBOX_EGRESS_RULES=false)"
    allowlist = network.may_join("allowlist", local_engine=True)
    assert not allowlist.allowed and not allowlist.contained
    assert allowlist.reason == "Allowlist mode needs the host's egress rules, and SANDBOX_EGRESS_RULES is off."


@pytest.mark.parametrize("mode", ["internet", "allowlist"])
def test_another_machines_engine_is_refused_its_rules_are_not_ours(machine, mode):
    decision = network.may_join(mode, local_engine=False)
    assert not decision.allowed and not decision.contained and not decision.problems
    assert decision.reason.startswith("The egress rules can only be enforced on this machine's own Docker engine")


@pytest.mark.parametrize("mode", ["internet", "allowlist"])
def test_rules_not_in_place_are_refused_naming_the_bridge_and_what_is_wrong(machine, mode):
    machine["problems"] = [RULES_WRONG, "chain CCP-N-x (nat) is missing"]
    decision = network.may_join(mode, local_engine=True)
    assert not decision.allowed and not decision.contained
    assert decision.problems == (RULES_WRONG, "chain CCP-N-x (nat) is missing")
    bridge = network.bridge_of(mode).bridge
    assert decision.reason == f"The egress rules for {bridge} are not in place ({RULES_WRONG}; chain CCP-N-x (nat) is missing)."


def test_rules_that_cannot_be_read_are_refused_with_the_reason(machine):
    machine["problems"] = network.EgressError("iptables is not installed")
    decision = network.may_join("internet", local_engine=True)
    assert not decision.allowed and decision.problems == ("iptables is not installed",)


def test_a_missing_bridge_is_refused_once_its_network_was_made(machine):
    machine["bridges"] = set()
    assert network.may_join("internet", local_engine=True).allowed  # a live change: the network may be made after
    decision = network.may_join("internet", local_engine=True, bridge_made=True)
    bridge = network.internet_bridge().bridge
    assert not decision.allowed
    assert decision.problems == (f"the bridge interface {bridge} is missing (renamed?), so the rules match nothing",)


def test_allowlist_mode_is_refused_while_the_panels_resolver_does_not_hold_its_port(machine):
    machine["probe"] = IMPOSTOR
    assert network.may_join("internet", local_engine=True).allowed  # internet mode does not ask it
    decision = network.may_join("allowlist", local_engine=True)
    assert not decision.allowed and decision.problems == (IMPOSTOR,)
