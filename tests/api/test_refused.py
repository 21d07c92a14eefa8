"""A sandbox's refused connections through the API: the network card's log, each attempt or one
row per destination, with the card's filters; what you may not see is 404."""

from datetime import timedelta

import pytest
from django.utils import timezone

from sandboxes.models import EgressDenial
from teams.models import Team

from .helpers import auth, member, token_for

pytestmark = pytest.mark.django_db


def test_the_refused_connections_are_listed_filtered_and_grouped(
    client, django_user_model, team, make_sandbox, fake_engine, clean_workspace
):
    box = make_sandbox("refused")
    now = timezone.now()
    EgressDenial.objects.create(sandbox=box, at=now - timedelta(hours=2), destination="198.18.0.9", port=443, protocol="tcp", count=3)
    EgressDenial.objects.create(sandbox=box, at=now - timedelta(minutes=1), destination="198.18.0.9", port=80, protocol="tcp")
    EgressDenial.objects.create(sandbox=box, at=now, name="evil.example", protocol="dns")
    token = token_for(member(django_user_model, "vic", team, "viewer"), "read")
    url = f"/api/v1/sandboxes/{box.pk}/refused/"
    page = client.get(url, **auth(token)).json()
    assert page["count"] == 3 and [r["protocol"] for r in page["results"]] == ["dns", "tcp", "tcp"]
    assert page["results"][1] == {
        "at": page["results"][1]["at"],
        "destination": "198.18.0.9",
        "name": "",
        "port": 80,
        "protocol": "tcp",
        "count": 1,
    }
    assert [r["port"] for r in client.get(url + "?q=443", **auth(token)).json()["results"]] == [443]
    assert [r["name"] for r in client.get(url + "?protocol=dns", **auth(token)).json()["results"]] == ["evil.example"]
    assert client.get(url + "?since=1h", **auth(token)).json()["count"] == 2
    grouped = client.get(url + "grouped/", **auth(token)).json()["results"]
    assert [(g["destination"], g["name"], g["attempts"], g["ports"]) for g in grouped] == [
        (None, "evil.example", 1, 0),
        ("198.18.0.9", "", 4, 2),
    ]
    assert client.get(url + "?since=forever", **auth(token)).status_code == 400
    assert client.get(url + "?what=1", **auth(token)).status_code == 400
    outsider = token_for(member(django_user_model, "out", Team.objects.create(name="Other", slug="other"), "admin"))
    assert client.get(url, **auth(outsider)).status_code == 404
    assert client.get(url + "grouped/", **auth(outsider)).status_code == 404
