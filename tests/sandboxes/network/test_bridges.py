"""The one table of the panel's networks (network.bridges): every name of a network, its
bridge and its gateway read from the same row of the settings."""

from sandboxes import network


def test_each_mode_has_one_network_with_its_bridge_subnet_and_gateway(settings):
    settings.SANDBOX_ALLOW_NETWORK, settings.SANDBOX_ALLOW_BRIDGE = "unit-allowlist", "unitb1"
    settings.SANDBOX_ALLOW_SUBNET = "198.51.100.0/24"
    allow = network.bridge_of("allowlist")
    assert (allow.network, allow.bridge, allow.subnet, allow.gateway) == ("unit-allowlist", "unitb1", "198.51.100.0/24", "198.51.100.1")
    assert allow == network.allowlist_bridge()
    assert network.network_of("internet") == settings.SANDBOX_NETWORK == network.internet_bridge().network
    assert network.networks() == (settings.SANDBOX_NETWORK, "unit-allowlist")
    # What the rules and the resolver use is the same row.
    assert network.allow_chains().bridge == "unitb1" and network.allow_gateway() == "198.51.100.1"
    assert network.chains().bridge == settings.SANDBOX_BRIDGE


def test_no_network_has_no_bridge():
    assert network.bridge_of("none") is None and network.network_of("none") == "none"
