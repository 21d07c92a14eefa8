"""The "Refused connections" card: a minute of refusals to one address must not push the names
and addresses refused before it out of reach. It pages back through the decision log, groups it
by destination and filters it; bad filters are a message, never a 500."""

import html
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from sandboxes.models import EgressDenial, Sandbox
from teams.models import Membership, Team

pytestmark = pytest.mark.django_db
FLOOD = "198.18.5.9"


@pytest.fixture
def flooded(team) -> Sandbox:
    """Two refusals ten minutes ago (a name, an address), then a minute of one address refused
    on two ports: 180 rows of 3 attempts each."""
    sandbox = Sandbox.objects.create(name="flooded", team=team, image="x", memory_mb=256, cpus=1, pids_limit=64)
    now = timezone.now()
    rows = [
        EgressDenial(sandbox=sandbox, at=now - timedelta(minutes=10), name="exfil.example.test", port=53, protocol="dns"),
        EgressDenial(sandbox=sandbox, at=now - timedelta(minutes=9), destination="203.0.113.7", port=22, protocol="tcp", count=2),
    ]
    rows += [
        EgressDenial(
            sandbox=sandbox, at=now - timedelta(seconds=60 - i / 3), destination=FLOOD, port=443 if i % 2 else 8443, protocol="tcp", count=3
        )
        for i in range(180)
    ]
    EgressDenial.objects.bulk_create(rows)
    return sandbox


def card(client, sandbox: Sandbox, **params) -> str:
    response = client.get(f"/sandboxes/{sandbox.pk}/refused/", params)
    assert response.status_code == 200, response.status_code
    return html.unescape(response.content.decode())


def rows(page: str) -> list[str]:
    """The card's rows of refusals (not its header, nor the row saying there are none)."""
    return re.findall(r"<tr[^>]*>(<td(?! colspan).*?)</tr>", page, re.S)


def test_pages_reach_back_past_a_flood(client, admin_user, flooded):
    client.force_login(admin_user)
    first = card(client, flooded)
    assert len(rows(first)) == 50 and "exfil.example.test" not in first  # the flood fills the first page
    assert "Page 1 of 4" in first and "182 entries" in first
    last = card(client, flooded, page=4)
    assert len(rows(last)) == 32
    assert "exfil.example.test" in last and "203.0.113.7" in last
    assert re.search(r'hx-get="[^"]*page=3', last)  # back towards the newest
    # The card refreshes itself with what it shows: the page it is on, not the newest one.
    assert re.search(r'id="denials"[^>]*hx-get="[^"]*page=4', last)


def test_grouped_by_destination_the_flood_is_one_row(client, admin_user, flooded):
    client.force_login(admin_user)
    page = card(client, flooded, group="destination")
    found = rows(page)
    assert len(found) == 3, found
    flood = next(r for r in found if FLOOD in r)
    assert "540" in flood and "180" in flood and "443, 8443" in flood  # attempts, entries, ports
    assert any("exfil.example.test" in r for r in found) and any("203.0.113.7" in r for r in found)
    assert found.index(flood) == 0  # the latest first


def test_the_filter_narrows_the_log(client, admin_user, flooded):
    client.force_login(admin_user)
    by_name = rows(card(client, flooded, q="exfil"))
    assert len(by_name) == 1 and "exfil.example.test" in by_name[0]
    by_address = card(client, flooded, q="203.0.113")
    assert len(rows(by_address)) == 1 and "203.0.113.7" in by_address
    by_port = card(client, flooded, q="8443")
    assert "90 entries" in by_port and all("8443" in r for r in rows(by_port))
    dns = rows(card(client, flooded, protocol="dns"))
    assert len(dns) == 1 and "exfil.example.test" in dns[0]
    recent = card(client, flooded, since="5m", group="destination")
    assert len(rows(recent)) == 1 and FLOOD in recent
    # The filter is kept by the refresh and by the pages.
    flood = card(client, flooded, q=FLOOD)
    assert re.search(r'id="denials"[^>]*hx-get="[^"]*q=198.18.5.9', flood)
    assert re.search(r'hx-get="[^"]*q=198.18.5.9[^"]*page=2', flood)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"protocol": "everything"}, "Protocol:"),
        ({"since": "forever"}, "Time:"),
        ({"group": "colour"}, "Show:"),
        ({"q": "x" * 300}, "Search:"),
        ({"q": "bad\x00name"}, "Search:"),
        ({"page": "abc"}, None),
        ({"page": "99999"}, None),
        ({"page": "-1"}, None),
    ],
)
def test_bad_filters_are_a_message_and_never_a_500(client, admin_user, flooded, params, message):
    client.force_login(admin_user)
    page = card(client, flooded, **params)
    if message:
        assert message in page, page[-2000:]
    assert rows(page)  # the log is still shown


def test_only_the_sandboxs_team_sees_its_card(client, django_user_model, flooded):
    other = Team.objects.create(slug="other", name="Other")
    outsider = django_user_model.objects.create_user("outsider", "", "pass-123-456")
    Membership.objects.create(user=outsider, team=other, role=Membership.Role.ADMIN)
    client.force_login(outsider)
    assert client.get(f"/sandboxes/{flooded.pk}/refused/", {"group": "destination"}).status_code == 404
