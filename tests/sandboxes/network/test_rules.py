"""The rules as written, built as plain values (sandboxes.network's rule builders): no Docker,
no iptables.
"""

from sandboxes import network


def test_the_rules_as_written_are_what_iptables_shows():
    """The comparison is exact: what apply() writes is what problems() reads back."""
    c = network.chains("ccpunit0")
    rules = network.wanted_rules(c, ["10.1.2.3"], [*network.BLOCKED_RANGES, "192.0.2.0/24"])
    assert rules[c.input] == [
        "-A CCP-I-ccpunit0 -m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY -j RETURN",
        "-A CCP-I-ccpunit0 -j CCP-D-ccpunit0",
    ]
    assert rules[c.deny][-1] == "-A CCP-D-ccpunit0 -j DROP" and "-j LOG" in rules[c.deny][0]
    assert not any("ctstate" in r for r in rules[c.forward])  # stateless: no flow outlives a repair
    assert "-A CCP-F-ccpunit0 -d 192.0.2.0/24 -j CCP-D-ccpunit0" in rules[c.forward]
    assert "-A CCP-F-ccpunit0 -d 10.1.2.3/32 -p udp -m udp --dport 53 -j RETURN" in rules[c.forward]
    assert rules[c.forward].index("-A CCP-F-ccpunit0 -o ccpunit0 -j CCP-D-ccpunit0") < rules[c.forward].index(
        "-A CCP-F-ccpunit0 -d 10.1.2.3/32 -p udp -m udp --dport 53 -j RETURN"
    )
