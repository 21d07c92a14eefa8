"""The incident pages read through incidents.selectors (as the API does): a member sees the
incident, its wizard and its report; anyone else gets the 404 of an incident that never was."""

import pytest

from incidents import services
from sandboxes.services import SystemActor
from teams.models import Membership, Team

pytestmark = pytest.mark.django_db


def test_the_pages_show_an_incident_to_its_team_only(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    box = make_sandbox("seen")
    incident = services.incident_declare(actor=SystemActor("test"), sandbox=box, severity="low", summary="a strange process")
    viewer = django_user_model.objects.create_user("eyes", password="pw-123456789")
    Membership.objects.create(user=viewer, team=team, role="viewer")
    client.force_login(viewer)
    assert "a strange process" in client.get("/incidents/").content.decode()
    for url in (f"/incidents/{incident.pk}/", f"/incidents/{incident.pk}/wizard/", f"/incidents/{incident.pk}/report.md"):
        page = client.get(url)
        assert page.status_code == 200 and "a strange process" in page.content.decode(), url
    stranger = django_user_model.objects.create_user("far", password="pw-123456789")
    Membership.objects.create(user=stranger, team=Team.objects.create(name="O", slug="o"), role="admin")
    client.force_login(stranger)
    assert "a strange process" not in client.get("/incidents/").content.decode()
    assert client.get(f"/incidents/{incident.pk}/").status_code == 404
    assert client.get(f"/incidents/{incident.pk}/report.md").status_code == 404
