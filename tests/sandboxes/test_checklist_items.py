"""A team's manual checklist items, edited on the team's page by its admins (audited), seen by
every member, and refused to everyone else."""

import pytest

from audit.models import AuditEvent
from sandboxes.models import ChecklistItem
from teams.models import Membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(team, django_user_model):
    user = django_user_model.objects.create_user("op", "", "op-pass-123")
    Membership.objects.create(user=user, team=team, role=Membership.Role.OPERATOR)
    return user


def test_a_team_admin_adds_changes_and_removes_items(client, admin_user, team):
    client.force_login(admin_user)
    url = f"/teams/{team.slug}/checklist/"
    page = client.get(url).content.decode()
    assert "Only install trusted packages" in page  # pre-filled from the original checklist
    seeded = ChecklistItem.objects.filter(team=team).count()
    client.post(url, {"phase": "during", "text": "  Never paste   production credentials  "})
    added = ChecklistItem.objects.get(team=team, text="Never paste production credentials")
    assert added.phase == "during" and ChecklistItem.objects.filter(team=team).count() == seeded + 1
    client.post(url, {"item": added.pk, "phase": "after", "text": "Rotate the API key if it was exposed"})
    added.refresh_from_db()
    assert (added.phase, added.text) == ("after", "Rotate the API key if it was exposed")
    client.post(url, {"item": added.pk, "remove": "1"})
    assert not ChecklistItem.objects.filter(pk=added.pk).exists()
    actions = list(
        AuditEvent.objects.filter(target=team.slug, action__startswith="checklist.item").order_by("seq").values_list("action", flat=True)
    )
    assert actions == ["checklist.item_added", "checklist.item_changed", "checklist.item_removed"]
    # Bad input: a message, nothing changed.
    before = list(ChecklistItem.objects.filter(team=team).values_list("pk", "phase", "text"))
    for bad, why in (
        ({"phase": "sometime", "text": "x"}, "Phase: one of"),
        ({"phase": "before", "text": ""}, "Text: from 1 to 200"),
        ({"phase": "before", "text": "y" * 201}, "Text: from 1 to 200"),
    ):
        response = client.post(url, bad, follow=True)
        assert response.status_code == 200 and why in response.content.decode()
    assert client.post(url, {"item": "999999", "phase": "before", "text": "z"}).status_code == 404
    assert client.post(url, {"item": "1 OR 1=1", "phase": "before", "text": "z"}).status_code == 404
    assert list(ChecklistItem.objects.filter(team=team).values_list("pk", "phase", "text")) == before


def test_an_operator_sees_the_items_but_cannot_change_them(client, operator, team, django_user_model):
    client.force_login(operator)
    url = f"/teams/{team.slug}/checklist/"
    page = client.get(url).content.decode()
    assert "Only install trusted packages" in page and "Add an item" not in page
    assert client.post(url, {"phase": "before", "text": "sneaky"}).status_code == 403
    assert not ChecklistItem.objects.filter(text="sneaky").exists()
    stranger = django_user_model.objects.create_user("stranger", "", "x-pass-123")
    client.force_login(stranger)
    assert client.get(url).status_code == 404
