"""One click from the refused-connections card to the allowlist, on real sandboxes: the panel's
resolver and the host's rules take the approved name within a second; an operator cannot widen."""

import time

import pytest

from audit.models import AuditEvent
from sandboxes.models import EgressDenial, Sandbox
from tests.api.helpers import auth, member, token_for
from tests.sandboxes.network.helpers import PORT, fetch, lookup

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def test_approving_a_refused_name_lets_the_next_connection_through_within_a_second(
    make_sandbox, clean_docker, upstream_dns, client, team, django_user_model
):
    s = make_sandbox("egress-approve", network_mode="allowlist", egress_allow=f"listed.example.test:{PORT}")
    assert s.status == "running", s.status_detail
    assert fetch(s, "other.example.test", PORT) == ""
    out = lookup(s, "other.example.test")
    assert "NXDOMAIN" in out or "can't resolve" in out, out
    assert EgressDenial.objects.filter(sandbox=s, name="other.example.test", kind="dns", allowed=False).exists()

    operator = member(django_user_model, "egress-op", team, "operator")
    client.force_login(operator)
    card = client.get(f"/sandboxes/{s.pk}/refused/").content.decode()
    assert "other.example.test" in card and "Allow</button>" not in card  # operators see no Allow
    refused = client.post(f"/sandboxes/{s.pk}/refused/allow/", {"name": "other.example.test", "port": str(PORT)}, follow=True)
    assert "Only the team&#x27;s admins may widen" in refused.content.decode()
    api = client.put(
        f"/api/v1/sandboxes/{s.pk}/settings/allowlist/",
        {"egress_allow": f"listed.example.test:{PORT}\nother.example.test:{PORT}"},
        content_type="application/json",
        **auth(token_for(operator, "operate")),
    )
    assert api.status_code == 403 and "Only the team's admins may widen" in api.json()["detail"]
    assert Sandbox.objects.get(pk=s.pk).egress_allow == f"listed.example.test:{PORT}"
    assert fetch(s, "other.example.test", PORT) == ""

    admin = member(django_user_model, "egress-admin", team, "admin")
    client.force_login(admin)
    assert "Allow</button>" in client.get(f"/sandboxes/{s.pk}/refused/").content.decode()
    approved = client.post(f"/sandboxes/{s.pk}/refused/allow/", {"name": "other.example.test", "port": str(PORT)})
    clicked = time.monotonic()
    assert approved.status_code == 302
    while (got := fetch(s, "other.example.test", PORT)) != "internet" and time.monotonic() - clicked < 3:
        time.sleep(0.05)
    took = time.monotonic() - clicked
    assert got == "internet" and took < 1.0, f"reached after {took:.2f} s"
    print(f"approval_to_connection_s={took:.3f}")
    assert Sandbox.objects.get(pk=s.pk).egress_allow == f"listed.example.test:{PORT}\nother.example.test:{PORT}"
    event = AuditEvent.objects.filter(action="sandbox.allowlist_changed", target=s.name).latest("seq")
    assert event.details["approved"] == f"other.example.test:{PORT}" and event.actor_name == "egress-admin"
    # Narrowing stays the operators' to do: they remove the entry again, and it is refused again.
    narrowed = client.put(
        f"/api/v1/sandboxes/{s.pk}/settings/allowlist/",
        {"egress_allow": f"listed.example.test:{PORT}"},
        content_type="application/json",
        **auth(token_for(operator, "operate")),
    )
    assert narrowed.status_code == 200
    assert fetch(s, upstream_dns["internet"], PORT) == ""  # its grant taken back at once


def test_approving_to_the_teams_list_opens_it_for_the_teams_allowlist_sandboxes(
    make_sandbox, clean_docker, upstream_dns, client, team, django_user_model
):
    s = make_sandbox("egress-team", network_mode="allowlist")
    assert fetch(s, "other.example.test", PORT) == ""
    admin = member(django_user_model, "egress-team-admin", team, "admin")
    client.force_login(admin)
    approved = client.post(f"/sandboxes/{s.pk}/refused/allow/", {"name": "other.example.test", "port": str(PORT), "list": "team"})
    clicked = time.monotonic()
    assert approved.status_code == 302
    while (got := fetch(s, "other.example.test", PORT)) != "internet" and time.monotonic() - clicked < 3:
        time.sleep(0.05)
    assert got == "internet" and time.monotonic() - clicked < 1.0
    team.refresh_from_db()
    assert team.egress_allow == f"other.example.test:{PORT}" and Sandbox.objects.get(pk=s.pk).egress_allow == ""
    event = AuditEvent.objects.filter(action="team.allowlist_changed").latest("seq")
    assert event.details["approved"] == f"other.example.test:{PORT}" and event.details["from_sandbox"] == s.name
    # Emptied by an admin on the team page: taken back at once.
    assert client.post(f"/teams/{team.slug}/allowlist/", {"egress_allow": ""}).status_code == 302
    assert fetch(s, upstream_dns["internet"], PORT) == ""
