"""The sandbox page's network and allowlist forms: bad input is a message and changes nothing;
good input is saved and audited. (The live effect on a running sandbox: network/test_allowlist_mode.py.)"""

import html
import ipaddress
import subprocess

import pytest

from audit.models import AuditEvent
from sandboxes import network, services
from sandboxes.models import Sandbox
from tests.support.docker import TEST_IMAGE

pytestmark = pytest.mark.django_db


@pytest.fixture
def stopped(team):
    return Sandbox.objects.create(
        name="forms", team=team, image="x", memory_mb=256, cpus=1, pids_limit=64, status=Sandbox.Status.STOPPED, network_mode="internet"
    )


def test_the_allowlist_form_saves_good_lists_and_refuses_bad_ones(client, admin_user, stopped):
    client.force_login(admin_user)
    url = f"/sandboxes/{stopped.pk}/allowlist/"
    page = client.post(url, {"egress_presets": ["github", "nope"], "egress_allow": "10.0.0.0/8\nexample.com:53"}, follow=True)
    text = page.content.decode()
    assert page.status_code == 200 and "no sandbox reaches" in text and "port 53" in text and "No preset called" in text
    stopped.refresh_from_db()
    assert stopped.egress_presets == [] and stopped.egress_allow == ""
    page = client.post(url, {"egress_presets": ["github"], "egress_allow": "api.example.com\n*.example.org:22,443"}, follow=True)
    assert "forms: allowlist saved." in page.content.decode()
    stopped.refresh_from_db()
    assert stopped.egress_presets == ["github"] and stopped.egress_allow == "api.example.com\n*.example.org:22,443"
    assert AuditEvent.objects.filter(action="sandbox.allowlist_changed", target="forms").count() == 1
    assert client.post("/sandboxes/999999/allowlist/", {"egress_allow": "x.com"}).status_code == 404


def test_the_network_form_refuses_an_unknown_mode_and_changes_a_stopped_sandbox(client, admin_user, stopped):
    client.force_login(admin_user)
    url = f"/sandboxes/{stopped.pk}/network/"
    page = client.post(url, {"network_mode": "everything"}, follow=True)
    assert "Network: one of internet, allowlist, none." in page.content.decode()
    page = client.post(url, {"network_mode": "none"}, follow=True)
    assert "forms: network is now no network." in page.content.decode()
    assert Sandbox.objects.get(pk=stopped.pk).network_mode == "none"


@pytest.fixture
def host_address(settings):
    """An address of the host's own, on a veth pair that carries no traffic (this kernel has no
    dummy interfaces): the host is reached on it, so no sandbox may be granted it."""
    slot = int(settings.PANEL_INSTANCE.removeprefix("test") or "0")
    name, address = f"ccpvd{slot}", f"198.19.{slot}.1"
    subprocess.run(["ip", "link", "del", name], capture_output=True)
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}b"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", name], check=True)
        yield address
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


@pytest.fixture
def lan(monkeypatch) -> str:
    """The network the host sits on (the subnet of its default route's interface): this
    machine's own, or, where that lies in a range refused anyway, one that does not."""
    found = network.lan_subnets()
    if not found:
        monkeypatch.setattr(network, "lan_subnets", lambda: ["198.19.200.0/24"])
        found = network.lan_subnets()
    return found[0]


def test_the_hosts_own_addresses_and_its_lan_are_refused_when_saved(client, admin_user, stopped, host_address, lan, fake_engine, team):
    """They are not in the ranges refused by name (a LAN on public addresses, an address on a
    VPN or test interface), and the rules would drop the traffic anyway: a grant of them is a
    promise the panel does not keep, so the list says so when it is saved."""
    client.force_login(admin_user)
    url = f"/sandboxes/{stopped.pk}/allowlist/"
    network = ipaddress.IPv4Network(lan)
    inside_lan = str(next(network.hosts()))
    for entry, why in (
        (f"{host_address}/32", f"the host's own address {host_address}"),
        (f"{host_address.rsplit('.', 1)[0]}.0/24:8443", f"the host's own address {host_address}"),
        (lan, f"the host's network {lan}"),
        (f"{inside_lan}/32:22", f"the host's network {lan}"),
        (str(network.supernet()), f"the host's network {lan}"),  # one that contains it
    ):
        page = client.post(url, {"egress_allow": f"api.example.com\n{entry}"}, follow=True)
        assert why in html.unescape(page.content.decode()), entry
        stopped.refresh_from_db()
        assert stopped.egress_allow == "", entry
    with pytest.raises(services.InvalidInput, match="the host's network"):
        services.sandbox_create(
            actor=admin_user,
            team=team,
            name="lan-lister",
            image=TEST_IMAGE,
            memory_mb=256,
            cpus=1,
            network_mode="allowlist",
            egress_allow=lan,
        )
    assert not Sandbox.objects.filter(name="lan-lister").exists()
    page = client.post(url, {"egress_allow": "198.51.100.0/24:8443"}, follow=True)  # the control: elsewhere is saved
    assert "forms: allowlist saved." in page.content.decode()
    assert Sandbox.objects.get(pk=stopped.pk).egress_allow == "198.51.100.0/24:8443"
