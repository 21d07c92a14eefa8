"""A sandbox's standing rules (its daily backup, its checkpoint retention) and a team's (its
second-factor rule, its resource policy, its freeze) through the API: each through the page's
service, audited with the token, refused where the page refuses it (the role x action table is
tests/api/test_parity_jobs.py)."""

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import AuditEvent
from backups.models import BackupSchedule
from incidents.models import Incident
from sandboxes.models import Sandbox
from storage.models import Checkpoint
from teams.models import Team, TeamPolicy

from .helpers import auth, member, post_json, token_for

pytestmark = pytest.mark.django_db


def put(client, url, token, body):
    return client.put(url, body, content_type="application/json", **auth(token))


def test_a_daily_backup_is_read_set_and_turned_off(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    box = make_sandbox("scheduled")
    token = token_for(member(django_user_model, "olga", team, "operator"), "operate")
    url = f"/api/v1/sandboxes/{box.pk}/backup-schedule/"
    none = client.get(url, **auth(token)).json()
    assert none == {"configured": False, "enabled": False, "at": None, "keep_last": None, "keep_days": None, "last_run_on": None}
    set_ = put(client, url, token, {"at": "04:30", "keep_last": 5})
    assert set_.status_code == 200, set_.content
    assert set_.json()["enabled"] and set_.json()["at"] == "04:30" and set_.json()["keep_last"] == 5 and set_.json()["keep_days"] is None
    row = BackupSchedule.objects.get(sandbox=box)
    assert row.enabled and row.at.strftime("%H:%M") == "04:30" and row.keep_last == 5
    event = AuditEvent.objects.get(action="backup.schedule_set")
    assert event.details["keep_last"] == 5 and event.details["via"] == "api" and event.details["token"] == token[:12]
    # What the page's form refuses, the API refuses, and nothing changes.
    for bad in ({"at": "25:00"}, {"at": "04:00", "keep_last": 0}, {"at": "04:00", "keep_days": -1}, {"at": "04:00", "when": 1}, {}):
        assert put(client, url, token, bad).status_code == 400, bad
    assert BackupSchedule.objects.get(sandbox=box).keep_last == 5
    assert client.delete(url, **auth(token)).status_code == 204
    row = BackupSchedule.objects.get(sandbox=box)
    assert not row.enabled and row.keep_last == 5 and row.at.strftime("%H:%M") == "04:30"
    assert client.get(url, **auth(token)).json()["enabled"] is False
    # A viewer reads it and changes nothing; a read token neither.
    viewer = token_for(member(django_user_model, "vic", team, "viewer"), "admin")
    assert client.get(url, **auth(viewer)).status_code == 200
    assert put(client, url, viewer, {"at": "01:00"}).status_code == 403
    assert client.delete(url, **auth(viewer)).status_code == 403
    reader = token_for(member(django_user_model, "ada", team, "admin"), "read")
    assert put(client, url, reader, {"at": "01:00"}).status_code == 403
    assert BackupSchedule.objects.get(sandbox=box).at.strftime("%H:%M") == "04:30"
    assert client.get("/api/v1/sandboxes/999999/backup-schedule/", **auth(token)).status_code == 404


def test_checkpoint_retention_is_read_set_and_rotates(
    client, django_user_model, team, make_sandbox, fake_engine, clean_workspace, settings
):
    box = make_sandbox("retained")
    token = token_for(member(django_user_model, "olga", team, "operator"), "operate")
    url = f"/api/v1/sandboxes/{box.pk}/checkpoint-retention/"
    assert client.get(url, **auth(token)).json() == {
        "keep_last": None,
        "keep_days": None,
        "keep_default": settings.SANDBOX_KEEP_CHECKPOINTS,
    }
    done = put(client, url, token, {"keep_last": 3, "keep_days": 10})
    assert done.status_code == 200, done.content
    assert done.json() == {"keep_last": 3, "keep_days": 10, "keep_default": settings.SANDBOX_KEEP_CHECKPOINTS, "removed": 0}
    assert Sandbox.objects.filter(pk=box.pk, checkpoint_keep_last=3, checkpoint_keep_days=10).exists()
    assert AuditEvent.objects.get(action="sandbox.checkpoint_retention").details["token"] == token[:12]
    for bad in ({"keep_last": 0}, {"keep_last": 1001}, {"keep_days": 3651}, {"keep_last": "x"}, {"other": 1}):
        assert put(client, url, token, bad).status_code == 400, bad
    cleared = put(client, url, token, {})
    assert cleared.status_code == 200 and cleared.json()["keep_last"] is None
    assert Sandbox.objects.filter(pk=box.pk, checkpoint_keep_last=None, checkpoint_keep_days=None).exists()
    viewer = token_for(member(django_user_model, "vic", team, "viewer"), "admin")
    assert put(client, url, viewer, {"keep_last": 2}).status_code == 403
    assert Sandbox.objects.get(pk=box.pk).checkpoint_keep_last is None


def test_checkpoints_beyond_the_new_retention_go(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    """Rows whose snapshots are not there (the fast tier has no storage pool): the rule deletes
    the oldest beyond it all the same, as the card's form does."""
    box = make_sandbox("rotated")
    made = [Checkpoint.objects.create(sandbox=box, snapshot=f"2026010{n + 1}-000000-x", created_by_name="test") for n in range(3)]
    token = token_for(member(django_user_model, "olga", team, "operator"), "operate")
    done = put(client, f"/api/v1/sandboxes/{box.pk}/checkpoint-retention/", token, {"keep_last": 1})
    assert done.status_code == 200 and done.json()["removed"] == 2, done.content
    assert list(Checkpoint.objects.filter(sandbox=box)) == [made[-1]]


def test_a_team_admin_requires_a_second_factor_and_a_token_without_one_is_then_refused(client, django_user_model, team):
    admin = member(django_user_model, "ada", team, "admin")
    TOTPDevice.objects.create(user=admin, name="phone", confirmed=True)
    token = token_for(admin, "admin")
    operator_token = token_for(member(django_user_model, "olga", team, "operator"), "admin")
    url = f"/api/v1/teams/{team.pk}/second-factor/"
    assert put(client, url, operator_token, {"required": True}).status_code == 403
    assert put(client, url, token_for(admin, "operate"), {"required": True}).status_code == 403
    assert not Team.objects.get(pk=team.pk).require_second_factor
    done = put(client, url, token, {"required": True})
    assert done.status_code == 200 and done.json()["require_second_factor"] is True
    assert Team.objects.get(pk=team.pk).require_second_factor
    assert AuditEvent.objects.filter(action="team.second_factor_required", target=team.slug).count() == 1
    assert put(client, url, token, {"required": True}).status_code == 200  # unchanged: not audited again
    assert AuditEvent.objects.filter(action="team.second_factor_required").count() == 1
    refused = client.get("/api/v1/teams/", **auth(operator_token))  # the operator has no second factor
    assert refused.status_code == 401 and "second factor" in refused.json()["detail"]
    assert put(client, url, token, {"required": "maybe"}).status_code == 400
    assert put(client, url, token, {"required": False}).json()["require_second_factor"] is False
    assert client.get("/api/v1/teams/", **auth(operator_token)).status_code == 200


def test_a_team_freeze_declares_an_incident_on_each_live_sandbox(
    client, django_user_model, team, make_sandbox, fake_engine, clean_workspace
):
    one, two = make_sandbox("frozen-1"), make_sandbox("frozen-2")
    url = f"/api/v1/teams/{team.pk}/freeze/"
    operator = token_for(member(django_user_model, "olga", team, "operator"), "admin")
    assert post_json(client, url, operator, {"summary": "leak"}).status_code == 404  # as the page: not an admin's team
    admin = member(django_user_model, "ada", team, "admin")
    assert post_json(client, url, token_for(admin, "operate"), {"summary": "leak"}).status_code == 403
    assert not Incident.objects.exists()
    assert post_json(client, url, token_for(admin), {"summary": "  "}).status_code == 400
    token = token_for(admin)
    done = post_json(client, url, token, {"summary": "token leaked", "severity": "critical"})
    assert done.status_code == 202, done.content
    body = done.json()
    assert sorted(i["sandbox_name"] for i in body["incidents"]) == ["frozen-1", "frozen-2"] and body["skipped"] == []
    assert {i.sandbox_id for i in Incident.objects.filter(severity="critical")} == {one.pk, two.pk}
    assert all(e.details["token"] == token[:12] for e in AuditEvent.objects.filter(action__startswith="incident."))
    assert Sandbox.objects.filter(pk__in=[one.pk, two.pk], on_hold=True).count() == 2


def test_a_team_policy_is_read_by_members_and_set_by_superusers_only(client, django_user_model, team):
    viewer = token_for(member(django_user_model, "vic", team, "viewer"), "read")
    url = f"/api/v1/teams/{team.pk}/policy/"
    shown = client.get(url, **auth(viewer)).json()
    assert shown["max_sandboxes"] is None and shown["usage"]["sandboxes"] == 0 and shown["over"] == []
    admin = token_for(member(django_user_model, "ada", team, "admin"))
    assert put(client, url, admin, {"max_sandboxes": 3}).status_code == 403
    root = django_user_model.objects.create_superuser("root", password="pw-123456789")
    assert put(client, url, token_for(root, "operate"), {"max_sandboxes": 3}).status_code == 403
    assert not TeamPolicy.objects.filter(team=team).exists()
    bad = put(client, url, token_for(root), {"idle_minutes": 5})
    assert bad.status_code == 400 and "idle_minutes" in bad.json()
    done = put(client, url, token_for(root), {"max_sandboxes": 3, "max_cpus": "2.5"})
    assert done.status_code == 200, done.content
    assert done.json()["max_sandboxes"] == 3 and done.json()["max_cpus"] == "2.50"
    assert TeamPolicy.objects.get(team=team).max_sandboxes == 3
    assert AuditEvent.objects.filter(action="team.policy_set").count() == 1
