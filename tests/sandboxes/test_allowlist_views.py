"""The sandbox page's network and allowlist forms: bad input is a message and changes nothing;
good input is saved and audited. (The live effect on a running sandbox: test_egress.py.)"""

import pytest

from audit.models import AuditEvent
from sandboxes.models import Sandbox

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
