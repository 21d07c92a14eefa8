"""Backups, incidents, a sandbox's and a team's standing rules (daily backup, checkpoint
retention, checklist, second factor, resource policy, freeze) and webhooks are refused through the API
exactly where their pages refuse them: a table of role x action, each run through the page (the existing view) and through the API with an
admin-scope token, each run undone (a savepoint rolled back) before the next. What each did is
judged by its effect (a row, a state, a file sent), never by the status code alone."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import time
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.utils import timezone

from backups import services as backups
from backups.models import Backup, BackupSchedule, Restore
from controlpanel.celery import app as celery_app
from incidents import services as incidents
from incidents.models import Incident
from sandboxes.models import ChecklistItem, ChecklistTick, Sandbox
from sandboxes.services import SystemActor, checklist
from teams.models import AgentPolicy, Team, TeamPolicy
from tests.backups.helpers import backup_row, hostile_archive
from tests.backups.helpers import member as archive_member
from tests.backups.test_archive import CONFIG
from webhooks import services as webhooks
from webhooks.models import Delivery, Webhook

from .helpers import auth, member, post_json, token_for

pytestmark = pytest.mark.django_db

ROLES = ("viewer", "operator", "admin")
RANK = {"viewer": 1, "operator": 2, "admin": 3, "superuser": 4}  # a resource policy: superusers only, no team role
HOOK = "http://198.18.0.1/hook"
DENY_CURL = {"permissions": {"deny": ["Bash(curl *)"]}}


@dataclass
class World:
    box: Sandbox  # backups are taken of it, incidents declared on it
    held: Sandbox  # it has an open incident, its Declare done
    backup: Backup  # finished, of `box`
    running: Backup  # being written, of `held`
    incident: Incident
    archive: bytes  # an archive made elsewhere, to import
    webhook: Webhook  # of the team, enabled, with one delivery done
    delivery: Delivery


@dataclass(frozen=True)
class Action:
    needs: str  # the least role the page asks for
    page: Callable[[Any, World], Any]
    api: Callable[[Any, str, World], Any]
    done: Callable[[World, Any], bool]  # its effect, judged after the call


def _sent(response) -> bool:
    return response.status_code == 200 and bool(b"".join(response.streaming_content))


def _put(c, url: str, token: str, body: dict):
    return c.put(url, body, content_type="application/json", **auth(token))


def _patch(c, url: str, token: str, body: dict):
    return c.patch(url, body, content_type="application/json", **auth(token))


def _first_item(w: "World") -> int:
    return ChecklistItem.objects.filter(team_id=w.box.team_id).values_list("pk", flat=True).first()  # type: ignore[return-value]


def _imported(team_pk: int, data: bytes) -> bytes:
    return encode_multipart(BOUNDARY, {"team": str(team_pk), "archive": SimpleUploadedFile("elsewhere.tar.gz", data)})


ACTIONS: dict[str, Action] = {
    "backup": Action(
        "operator",
        lambda c, w: c.post(f"/sandboxes/{w.box.pk}/backups/new/"),
        lambda c, t, w: post_json(c, "/api/v1/backups/", t, {"sandbox": w.box.pk}),
        lambda w, r: Backup.objects.filter(sandbox=w.box, status="running").exists(),
    ),
    "verify": Action(
        "operator",
        lambda c, w: c.post(f"/backups/{w.backup.pk}/verify/"),
        lambda c, t, w: post_json(c, f"/api/v1/backups/{w.backup.pk}/verify/", t),
        lambda w, r: Backup.objects.get(pk=w.backup.pk).verified_at is not None,
    ),
    "download": Action(
        "operator",
        lambda c, w: c.get(f"/backups/{w.backup.pk}/download/"),
        lambda c, t, w: c.get(f"/api/v1/backups/{w.backup.pk}/download/", **auth(t)),
        lambda w, r: _sent(r),
    ),
    "restore into itself": Action(
        "operator",
        lambda c, w: c.post(f"/backups/{w.backup.pk}/restore/", {"into": "self", "confirm_name": w.box.name}),
        lambda c, t, w: post_json(c, f"/api/v1/backups/{w.backup.pk}/restore/", t, {"into": "self", "confirm_name": w.box.name}),
        lambda w, r: Restore.objects.filter(backup=w.backup).exists(),
    ),
    "cancel": Action(
        "operator",
        lambda c, w: c.post(f"/backups/{w.running.pk}/cancel/"),
        lambda c, t, w: post_json(c, f"/api/v1/backups/{w.running.pk}/cancel/", t),
        lambda w, r: Backup.objects.get(pk=w.running.pk).cancel_requested,
    ),
    "delete": Action(
        "admin",
        lambda c, w: c.post(f"/backups/{w.backup.pk}/delete/"),
        lambda c, t, w: c.delete(f"/api/v1/backups/{w.backup.pk}/", **auth(t)),
        lambda w, r: not Backup.objects.filter(pk=w.backup.pk).exists(),
    ),
    "import": Action(
        "operator",
        lambda c, w: c.generic("POST", "/backups/import/", _imported(w.box.team_id, w.archive), content_type=MULTIPART_CONTENT),
        lambda c, t, w: c.generic(
            "POST", "/api/v1/backups/import/", _imported(w.box.team_id, w.archive), content_type=MULTIPART_CONTENT, **auth(t)
        ),
        lambda w, r: Backup.objects.filter(kind="imported").exists(),
    ),
    "declare": Action(
        "operator",
        lambda c, w: c.post(f"/sandboxes/{w.box.pk}/incident/", {"severity": "high", "summary": "odd"}),
        lambda c, t, w: post_json(c, "/api/v1/incidents/", t, {"sandbox": w.box.pk, "severity": "high", "summary": "odd"}),
        lambda w, r: Incident.objects.filter(sandbox=w.box).exists(),
    ),
    "snapshot step": Action(
        "operator",
        lambda c, w: c.post(f"/incidents/{w.incident.pk}/step/", {"step": "snapshot"}),
        lambda c, t, w: post_json(c, f"/api/v1/incidents/{w.incident.pk}/steps/", t, {"step": "snapshot"}),
        lambda w, r: Incident.objects.get(pk=w.incident.pk).step == "snapshot",
    ),
    "close": Action(
        "operator",
        lambda c, w: c.post(f"/incidents/{w.incident.pk}/step/", {"step": "close", "resolution": "fine", "notes": ""}),
        lambda c, t, w: post_json(c, f"/api/v1/incidents/{w.incident.pk}/close/", t, {"resolution": "fine"}),
        lambda w, r: Incident.objects.get(pk=w.incident.pk).step == "close",
    ),
    "evidence": Action(
        "operator",
        lambda c, w: c.get(f"/incidents/{w.incident.pk}/evidence/"),
        lambda c, t, w: c.get(f"/api/v1/incidents/{w.incident.pk}/evidence/", **auth(t)),
        lambda w, r: _sent(r),
    ),
    "report": Action(
        "viewer",
        lambda c, w: c.get(f"/incidents/{w.incident.pk}/report.md"),
        lambda c, t, w: c.get(f"/api/v1/incidents/{w.incident.pk}/report.md", **auth(t)),
        lambda w, r: r.status_code == 200 and b"odd traffic" in r.content,
    ),
    "backup schedule": Action(
        "operator",
        lambda c, w: c.post(
            f"/sandboxes/{w.box.pk}/backups/schedule/", {"enabled": "on", "at": "04:00", "keep_last": "3", "keep_days": ""}
        ),
        lambda c, t, w: _put(c, f"/api/v1/sandboxes/{w.box.pk}/backup-schedule/", t, {"at": "04:00", "keep_last": 3}),
        lambda w, r: BackupSchedule.objects.filter(sandbox=w.box, enabled=True, keep_last=3).exists(),
    ),
    "backup schedule off": Action(
        "operator",
        lambda c, w: c.post(f"/sandboxes/{w.held.pk}/backups/schedule/", {"at": "02:00", "keep_last": "7", "keep_days": ""}),
        lambda c, t, w: c.delete(f"/api/v1/sandboxes/{w.held.pk}/backup-schedule/", **auth(t)),
        lambda w, r: BackupSchedule.objects.filter(sandbox=w.held, enabled=False).exists(),
    ),
    "checkpoint retention": Action(
        "operator",
        lambda c, w: c.post(f"/sandboxes/{w.box.pk}/checkpoints/retention/", {"keep_last": "3", "keep_days": ""}),
        lambda c, t, w: _put(c, f"/api/v1/sandboxes/{w.box.pk}/checkpoint-retention/", t, {"keep_last": 3}),
        lambda w, r: Sandbox.objects.get(pk=w.box.pk).checkpoint_keep_last == 3,
    ),
    "second factor": Action(
        "admin",
        lambda c, w: c.post(f"/teams/{w.box.team.slug}/second-factor/", {"require": "1"}),
        lambda c, t, w: _put(c, f"/api/v1/teams/{w.box.team_id}/second-factor/", t, {"required": True}),
        lambda w, r: Team.objects.get(pk=w.box.team_id).require_second_factor,
    ),
    "freeze": Action(
        "admin",
        lambda c, w: c.post(f"/incidents/teams/{w.box.team_id}/freeze/", {"severity": "high", "summary": "frozen"}),
        lambda c, t, w: post_json(c, f"/api/v1/teams/{w.box.team_id}/freeze/", t, {"severity": "high", "summary": "frozen"}),
        lambda w, r: Incident.objects.filter(sandbox=w.box, summary="frozen").exists(),
    ),
    "resource policy": Action(
        "superuser",
        lambda c, w: c.post(f"/teams/{w.box.team.slug}/policy/", {"max_sandboxes": "7"}),
        lambda c, t, w: _put(c, f"/api/v1/teams/{w.box.team_id}/policy/", t, {"max_sandboxes": 7}),
        lambda w, r: TeamPolicy.objects.filter(team_id=w.box.team_id, max_sandboxes=7).exists(),
    ),
    "agent policy": Action(
        "admin",
        lambda c, w: c.post(f"/teams/{w.box.team.slug}/agent-policy/", {"managed_settings": json.dumps(DENY_CURL)}),
        lambda c, t, w: _put(c, f"/api/v1/teams/{w.box.team_id}/agent-policy/", t, {"managed_settings": DENY_CURL}),
        lambda w, r: AgentPolicy.objects.filter(team_id=w.box.team_id, managed_settings=DENY_CURL).exists(),
    ),
    "team allowlist": Action(
        "admin",
        lambda c, w: c.post(f"/teams/{w.box.team.slug}/allowlist/", {"egress_allow": "team.example:8443"}),
        lambda c, t, w: _put(c, f"/api/v1/teams/{w.box.team_id}/allowlist/", t, {"egress_allow": "team.example:8443"}),
        lambda w, r: Team.objects.filter(pk=w.box.team_id, egress_allow="team.example:8443").exists(),
    ),
    "checklist item": Action(
        "admin",
        lambda c, w: c.post(f"/teams/{w.box.team.slug}/checklist/", {"phase": "after", "text": "Rotate the keys"}),
        lambda c, t, w: post_json(c, f"/api/v1/teams/{w.box.team_id}/checklist/", t, {"phase": "after", "text": "Rotate the keys"}),
        lambda w, r: ChecklistItem.objects.filter(team_id=w.box.team_id, text="Rotate the keys").exists(),
    ),
    "checklist tick": Action(
        "operator",
        lambda c, w: c.post(f"/sandboxes/{w.box.pk}/checklist/", {"item": str(_first_item(w)), "ticked": "1"}),
        lambda c, t, w: _put(c, f"/api/v1/sandboxes/{w.box.pk}/checklist/{_first_item(w)}/", t, {"ticked": True}),
        lambda w, r: ChecklistTick.objects.filter(sandbox=w.box, item_id=_first_item(w)).exists(),
    ),
    "webhook create": Action(
        "admin",
        lambda c, w: c.post(f"/teams/{w.box.team.slug}/webhooks/", {"url": HOOK + "/new", "events": ["incident.declared"]}),
        lambda c, t, w: post_json(
            c, "/api/v1/webhooks/", t, {"team": w.box.team_id, "url": HOOK + "/new", "events": ["incident.declared"]}
        ),
        lambda w, r: Webhook.objects.filter(url=HOOK + "/new").exists(),
    ),
    "webhook disable": Action(
        "admin",
        lambda c, w: c.post(f"/teams/{w.box.team.slug}/webhooks/{w.webhook.pk}/", {"op": "disable"}),
        lambda c, t, w: _patch(c, f"/api/v1/webhooks/{w.webhook.pk}/", t, {"enabled": False}),
        lambda w, r: not Webhook.objects.get(pk=w.webhook.pk).enabled,
    ),
    "webhook rotate": Action(
        "admin",
        lambda c, w: c.post(f"/teams/{w.box.team.slug}/webhooks/{w.webhook.pk}/", {"op": "rotate"}),
        lambda c, t, w: post_json(c, f"/api/v1/webhooks/{w.webhook.pk}/rotate-secret/", t),
        lambda w, r: Webhook.objects.get(pk=w.webhook.pk).secret_rotated_at is not None,
    ),
    "webhook delete": Action(
        "admin",
        lambda c, w: c.post(f"/teams/{w.box.team.slug}/webhooks/{w.webhook.pk}/", {"op": "delete"}),
        lambda c, t, w: c.delete(f"/api/v1/webhooks/{w.webhook.pk}/", **auth(t)),
        lambda w, r: not Webhook.objects.filter(pk=w.webhook.pk).exists(),
    ),
    "webhook redeliver": Action(
        "admin",
        lambda c, w: c.post(f"/teams/{w.box.team.slug}/webhooks/{w.webhook.pk}/deliveries/{w.delivery.pk}/redeliver/"),
        lambda c, t, w: post_json(c, f"/api/v1/webhooks/{w.webhook.pk}/deliveries/{w.delivery.pk}/redeliver/", t),
        lambda w, r: Delivery.objects.filter(webhook=w.webhook).count() == 2,
    ),
}


@pytest.fixture
def world(make_sandbox, fake_engine, clean_workspace, tmp_path) -> World:
    box = make_sandbox("parity-box")
    held = make_sandbox("parity-held")
    path = backups.backup_root() / "parity-box-by-hand.tar.gz"
    config = {**CONFIG, "name": box.name}
    backup = backup_row(box, path, hostile_archive(path, [archive_member("workspace/Projects/a", b"a")], config=config), config)
    running = backups.backup_request(actor=SystemActor("test"), sandbox=held, enqueue=False)
    Sandbox.objects.filter(pk=held.pk).update(pending_action="")  # its worker holds no claim: cancel ends it at once
    incident = incidents.incident_declare(actor=SystemActor("test"), sandbox=held, severity="low", summary="odd traffic")
    incidents.incident_step_perform(incident_id=incident.pk)
    evidence = settings.EVIDENCE_ROOT / "parity-evidence.tar.gz"
    evidence.parent.mkdir(parents=True, exist_ok=True)
    evidence.write_bytes(b"evidence bytes")
    Incident.objects.filter(pk=incident.pk).update(evidence_file=evidence.name)
    incident.refresh_from_db()
    hostile_archive(tmp_path / "elsewhere.tar.gz", [archive_member("workspace/Projects/b", b"b")], config=CONFIG)
    backups.schedule_set(actor=SystemActor("test"), sandbox=held, enabled=True, at=time(2, 0), keep_last=7, keep_days=None)
    hook = webhooks.webhook_create(actor=SystemActor("test"), team=box.team, url=HOOK, chosen_events=["incident.declared"]).webhook
    Webhook.objects.filter(pk=hook.pk).update(secret_rotated_at=None)
    delivery = Delivery.objects.create(
        webhook=hook, event="incident.declared", payload={"event": "incident.declared"}, status="delivered", next_attempt_at=timezone.now()
    )
    checklist.team_items(box.team)  # the team's items, made before the table (a GET makes them)
    before = set(settings.BACKUP_ROOT.iterdir())
    celery_app.conf.task_always_eager = True  # a verify runs when it is sent: its effect is seen
    yield World(box, held, backup, running, incident, (tmp_path / "elsewhere.tar.gz").read_bytes(), hook, delivery)
    celery_app.conf.task_always_eager = False
    for left in set(settings.BACKUP_ROOT.iterdir()) - before:  # imports whose rows were rolled back
        if left.is_file():
            left.unlink()
    evidence.unlink(missing_ok=True)


def _undone(world: World, call: Callable[[], Any], action: Action) -> tuple[Any, bool]:
    """Make the call and judge its effect, then undo whatever it wrote to the database."""
    with transaction.atomic():
        response = call()
        effect = action.done(world, response)
        transaction.set_rollback(True)
    return response, effect


def _table(client, django_user_model, team, world: World, scope: str) -> list[tuple]:
    users = {role: member(django_user_model, f"{scope}-{role}", team, role) for role in ROLES}
    tokens = {role: token_for(user, scope) for role, user in users.items()}
    rows = []
    for role in ROLES:
        for name, action in ACTIONS.items():
            client.force_login(users[role])
            page, by_page = _undone(world, lambda a=action: a.page(client, world), action)
            client.logout()
            api, by_api = _undone(world, lambda a=action, t=tokens[role]: a.api(client, t, world), action)
            assert api.status_code < 500 and page.status_code < 500, (role, name, page.status_code, api.status_code)
            rows.append((role, name, by_page, by_api, page.status_code == 403, api.status_code == 403, RANK[role] >= RANK[action.needs]))
    return rows


@pytest.mark.slow  # 75 cases, each through the page and the API: `make test`, not the fast tier
def test_page_and_api_allow_and_refuse_the_same_backup_and_incident_actions(client, django_user_model, team, world):
    rows = _table(client, django_user_model, team, world, "admin")
    mismatches = [r for r in rows if not (r[2] == r[3] == r[6] and r[4] == r[5])]
    assert not mismatches, mismatches
    assert len(rows) == len(ROLES) * len(ACTIONS)
    assert any(r[2] for r in rows) and not all(r[2] for r in rows)  # the table has both outcomes


def test_an_operate_token_does_no_admin_action_and_a_read_token_only_reads(client, django_user_model, team, world):
    admin_operate = token_for(member(django_user_model, "boss", team, "admin"), "operate")
    for name, action in ACTIONS.items():
        api, effect = _undone(world, lambda a=action: a.api(client, admin_operate, world), action)
        assert effect == (RANK[action.needs] <= RANK["operator"]), (name, api.status_code)
    admin_read = token_for(member(django_user_model, "boss-reader", team, "admin"), "read")
    for name, action in ACTIONS.items():
        api, effect = _undone(world, lambda a=action: a.api(client, admin_read, world), action)
        assert effect == (action.needs == "viewer") and (effect or api.status_code == 403), (name, api.status_code)
