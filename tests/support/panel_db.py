"""A panel's database filled like one in use, and its rows read back as plain values: for the
database move's test, which runs these in subprocesses (`manage.py shell -c`) on a database of
its own (a SQLite file it builds, the PostgreSQL database it moves that into)."""

import json
import uuid
from datetime import time, timedelta
from decimal import Decimal

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from audit.services import audit_record
from backups.models import Backup, BackupSchedule, Restore
from incidents.models import Incident, IncidentEvent
from sandboxes.models import ChecklistItem, ChecklistTick, EgressDenial, Mount, Sandbox, TerminalSession
from sandboxes.secrets.credentials import git_identity_set, secret_set
from storage.models import Checkpoint
from teams.models import Membership, Team
from tests.support.audit_events import million_events

BULK_EVENTS = 10_000


def build() -> None:
    """Users, teams, sandboxes, backups, incidents and secrets, and 10,000 audit events in bulk
    followed by those the services write."""
    million_events(BULK_EVENTS)  # first: the bulk insert starts the chain at #1
    User = get_user_model()
    admin = User.objects.create_superuser("root-admin", password="pw-root-123")
    alice = User.objects.create_user("alice", password="pw-alice-123", first_name="Älice")
    ops = Group.objects.create(name="operators")
    ops.permissions.set(Permission.objects.filter(codename__startswith="view_")[:5])
    alice.groups.add(ops)
    red = Team.objects.create(slug="red", name="Red")
    Membership.objects.create(user=alice, team=red, role=Membership.Role.ADMIN)
    Membership.objects.create(user=admin, team=Team.objects.get(slug="default"), role=Membership.Role.ADMIN)
    for i in range(3):
        _sandbox(f"box-{i}", red if i else Team.objects.get(slug="default"), alice, admin, i)
    secret_set(actor=admin, name="TEAM_TOKEN", value="team-secret-value", team=red)
    audit_record(
        actor=alice,
        action="test.details",
        target="box-1",
        details={"z": 1, "a": [1.5, 2.25, "ß"], "nested": {"b": None, "a": True}, "big": 12345678901234},
        source_ip="2001:db8::1",
        team_id=red.pk,
    )


def _sandbox(name: str, team: Team, user, admin, i: int) -> None:
    now = timezone.now()
    box = Sandbox.objects.create(
        name=name,
        team=team,
        created_by=user,
        image="ccpanel/test-busybox:latest",
        memory_mb=256,
        cpus=Decimal("1.25"),
        pids_limit=512,
        status=Sandbox.Status.STOPPED,
        egress_presets=["claude-code"],
        host_path_ids={"workspace": [i, 7], "b": "x"},
        oom_since=now - timedelta(minutes=3, microseconds=123457),
    )
    audit_record(actor=user, action="sandbox.create", target=name, sandbox_uuid=box.uuid, team_id=team.pk, source_ip="127.0.0.1")
    Mount.objects.create(sandbox=box, host_path=f"/srv/data/{name}", container_path="/data", read_only=True)
    TerminalSession.objects.create(sandbox=box, user=user, user_name=user.username, source_ip="::ffff:127.0.0.1", ended_at=now)
    item = ChecklistItem.objects.create(team=team, phase="before", text=f"Check {name}")
    ChecklistTick.objects.create(sandbox=box, item=item, ticked_by=user)
    EgressDenial.objects.create(sandbox=box, at=now, destination="198.18.0.9", port=443, protocol="tcp", count=3)
    secret_set(actor=admin, name="ANTHROPIC_API_KEY", value=f"sk-{name}", sandbox=box)
    git_identity_set(actor=admin, sandbox=box, name="Agent Ümlaut", email="agent@example.com")
    backup = Backup.objects.create(
        sandbox=box,
        team=team,
        sandbox_name=name,
        file_name=f"{name}-20250101-000000.tar.gz",
        status="ok",
        config={"memory_mb": 256, "cpus": "1.25"},
        size_bytes=2**40 + i,
        created_by=user,
        created_by_name=user.username,
        finished_at=now,
    )
    BackupSchedule.objects.create(sandbox=box, at=time(3, 30), keep_last=7)
    Restore.objects.create(backup=backup, backup_name=backup.file_name, sandbox=box, requested_by_name="alice")
    Checkpoint.objects.create(sandbox=box, created_by_name="alice", snapshot=f"snap-{i}")
    incident = Incident.objects.create(
        sandbox=box,
        team=team,
        sandbox_name=name,
        severity="high",
        summary=f"Odd traffic from {name}",
        declared_by=user,
        declared_by_name=user.username,
        backup=backup,
        evidence_members=[{"path": "inspect.json", "size": 10, "sha256": "0" * 64}],
    )
    IncidentEvent.objects.create(incident=incident, step="declare", message="paused", actor_name=user.username)


def _plain(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    return value


def rows(chosen: dict[str, list] | None = None, sample: int = 3) -> None:
    """Prints, as one JSON object, every model's row count and some of its rows, every column
    as a plain value: those `chosen` (a model's label to primary keys), or else its first,
    middle and last `sample` rows by primary key."""
    out = {}
    for model in apps.get_models(include_auto_created=True):
        if not model._meta.managed or model._meta.proxy:
            continue
        pks = list(model._base_manager.order_by("pk").values_list("pk", flat=True))
        if chosen is None:
            mid = len(pks) // 2
            picks = sorted(set(pks[:sample] + pks[mid : mid + sample] + pks[-sample:]))
        else:
            picks = chosen.get(model._meta.label, [])
        fields = [f.attname for f in model._meta.concrete_fields]
        picked = {str(obj.pk): {f: _plain(getattr(obj, f)) for f in fields} for obj in model._base_manager.filter(pk__in=picks)}
        out[model._meta.label] = {"count": len(pks), "rows": picked}
    print(json.dumps(out, default=str))
