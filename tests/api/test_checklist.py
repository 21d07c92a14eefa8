"""The security checklist through the API: a team's manual items (members read, admins change)
and a sandbox's checks and ticks (operators tick), through the pages' services, audited with the
token; refused where the pages refuse (the table is tests/api/test_parity_jobs.py)."""

import pytest

from audit.models import AuditEvent
from sandboxes.models import ChecklistItem, ChecklistTick
from teams.models import Team

from .helpers import auth, member, post_json, token_for

pytestmark = pytest.mark.django_db


def put(client, url, token, body):
    return client.put(url, body, content_type="application/json", **auth(token))


def test_a_teams_items_are_read_added_changed_and_removed(client, django_user_model, team):
    viewer = token_for(member(django_user_model, "vic", team, "viewer"), "read")
    url = f"/api/v1/teams/{team.pk}/checklist/"
    items = client.get(url, **auth(viewer)).json()
    assert len(items) == 12 and items[0]["phase"] == "before"  # the original list, the first time
    assert post_json(client, url, viewer, {"phase": "after", "text": "Rotate the keys"}).status_code == 403
    admin = member(django_user_model, "ada", team, "admin")
    assert post_json(client, url, token_for(admin, "operate"), {"phase": "after", "text": "Rotate the keys"}).status_code == 403
    token = token_for(admin)
    made = post_json(client, url, token, {"phase": "after", "text": "  Rotate   the keys "})
    assert made.status_code == 201 and made.json()["text"] == "Rotate the keys", made.content
    item = ChecklistItem.objects.get(pk=made.json()["id"])
    for bad in ({"phase": "never", "text": "x"}, {"phase": "after", "text": "x" * 201}, {"phase": "after", "text": "   "}, {"text": "x"}):
        assert post_json(client, url, token, bad).status_code == 400, bad
    changed = put(client, f"{url}{item.pk}/", token, {"phase": "during", "text": "Rotate the tokens"})
    assert changed.status_code == 200 and ChecklistItem.objects.get(pk=item.pk).text == "Rotate the tokens"
    assert put(client, f"{url}{item.pk}/", viewer, {"phase": "during", "text": "no"}).status_code == 403
    other = Team.objects.create(name="Other", slug="other")
    assert put(client, f"/api/v1/teams/{other.pk}/checklist/{item.pk}/", token, {"phase": "during", "text": "x"}).status_code == 404
    assert client.delete(f"{url}999999/", **auth(token)).status_code == 404
    assert client.delete(f"{url}{item.pk}/", **auth(token)).status_code == 204
    assert not ChecklistItem.objects.filter(pk=item.pk).exists()
    actions = list(AuditEvent.objects.filter(action__startswith="checklist.").order_by("seq").values_list("action", "details__token"))
    assert actions == [(a, token[:12]) for a in ("checklist.item_added", "checklist.item_changed", "checklist.item_removed")]


def test_a_sandboxs_checklist_is_run_and_its_items_ticked(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    box = make_sandbox("checked")
    viewer = token_for(member(django_user_model, "vic", team, "viewer"), "read")
    shown = client.get(f"/api/v1/sandboxes/{box.pk}/checklist/", **auth(viewer))
    assert shown.status_code == 200, shown.content
    body = shown.json()
    assert len(body["checks"]) == 8 and body["failed"] == sum(1 for c in body["checks"] if c["ok"] is False)
    assert len(body["items"]) == 12 and not any(i["ticked"] for i in body["items"])
    first = body["items"][0]["id"]
    url = f"/api/v1/sandboxes/{box.pk}/checklist/{first}/"
    assert put(client, url, viewer, {"ticked": True}).status_code == 403
    operator = token_for(member(django_user_model, "olga", team, "operator"), "operate")
    done = put(client, url, operator, {"ticked": True})
    assert done.status_code == 200 and done.json()["ticked"] is True
    assert ChecklistTick.objects.filter(sandbox=box, item_id=first).exists()
    assert client.get(f"/api/v1/sandboxes/{box.pk}/checklist/", **auth(viewer)).json()["items"][0]["ticked"] is True
    assert put(client, url, operator, {"ticked": False}).status_code == 200
    assert not ChecklistTick.objects.filter(sandbox=box, item_id=first).exists()
    assert put(client, f"/api/v1/sandboxes/{box.pk}/checklist/999999/", operator, {"ticked": True}).status_code == 404
    assert put(client, url, operator, {"ticked": "perhaps"}).status_code == 400
    assert [e.details["token"] for e in AuditEvent.objects.filter(action__in=["checklist.ticked", "checklist.unticked"])] == [
        operator[:12]
    ] * 2
