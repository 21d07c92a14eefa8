"""Schemathesis against the schema the panel serves, in-process through its WSGI app: for a
token of each scope, every operation with valid and invalid data (a fixed seed, a small budget):
never a 5xx, never an answer the schema does not describe. The fake engine stands in for Docker
(what a create or an action does to Docker is the lifecycle tests' business); the queue is never
reached (the test's transaction never commits)."""

import json
import re

import pytest
import schemathesis
from django.conf import settings as settings_module
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django_otp.plugins.otp_totp.models import TOTPDevice
from hypothesis import HealthCheck, given, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from controlpanel.wsgi import application

from .helpers import member, token_for

pytestmark = pytest.mark.django_db

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
SEED = 20261207
EXAMPLES = 10  # per operation and mode: 87 operations x 2 x 8 configurations, about 3 minutes in all


@pytest.fixture
def wsgi_keeps_the_test_connection():
    """Called straight through its WSGI app (as Django's test client does not), Django would
    close the database connection after each request, and with it the test's transaction:
    disconnected here for the test, as the test client does for its own requests."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _run(operation, mode: GenerationMode, headers: dict[str, str], examples: int = EXAMPLES) -> list[int]:
    """Run the operation's examples; returns the status codes it was answered with."""
    seen: list[int] = []

    @seed(SEED)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        seen.append(case.call_and_validate(headers=headers, checks=CHECKS).status_code)

    check()
    return seen


FIRST_SLICE = {
    "GET /api/v1/sandboxes/",
    "POST /api/v1/sandboxes/",
    "GET /api/v1/sandboxes/{pk}/",
    "POST /api/v1/sandboxes/{pk}/{action}/",
    "GET /api/v1/audit/events/",
    "GET /api/v1/audit/export.jsonl",
    "GET /api/v1/audit/export.csv",
    "POST /api/v1/audit/verify/",
    "GET /api/v1/teams/",
    "GET /api/v1/teams/{pk}/",
    "PUT /api/v1/teams/{pk}/members/{username}/",
    "DELETE /api/v1/teams/{pk}/members/{username}/",
    "GET /api/v1/teams/{team}/secrets/",
    "POST /api/v1/teams/{team}/secrets/",
    "PATCH /api/v1/teams/{team}/secrets/{pk}/",
    "DELETE /api/v1/teams/{team}/secrets/{pk}/",
    "GET /api/v1/sandboxes/{sandbox}/secrets/",
    "POST /api/v1/sandboxes/{sandbox}/secrets/",
    "PATCH /api/v1/sandboxes/{sandbox}/secrets/{pk}/",
    "DELETE /api/v1/sandboxes/{sandbox}/secrets/{pk}/",
    "GET /api/v1/sandboxes/{pk}/settings/",
    "PUT /api/v1/sandboxes/{pk}/settings/network/",
    "PUT /api/v1/sandboxes/{pk}/settings/allowlist/",
    "PUT /api/v1/sandboxes/{pk}/settings/disk/",
    "PUT /api/v1/sandboxes/{pk}/settings/git-identity/",
    "POST /api/v1/sandboxes/{pk}/settings/ssh-key/",
    "GET /api/v1/hosts/",
    "POST /api/v1/hosts/",
    "GET /api/v1/hosts/{pk}/",
    "PATCH /api/v1/hosts/{pk}/",
    "DELETE /api/v1/hosts/{pk}/",
    "GET /api/v1/hosts/join-tokens/",
    "POST /api/v1/hosts/join-tokens/",
    "POST /api/v1/hosts/join-tokens/{pk}/revoke/",
    "GET /api/v1/sandboxes/{pk}/logs/",
    "GET /api/v1/webhooks/",
    "POST /api/v1/webhooks/",
    "GET /api/v1/webhooks/{pk}/",
    "PATCH /api/v1/webhooks/{pk}/",
    "DELETE /api/v1/webhooks/{pk}/",
    "POST /api/v1/webhooks/{pk}/rotate-secret/",
    "POST /api/v1/webhooks/{pk}/deliveries/{delivery}/redeliver/",
}


SECOND_SLICE = {
    "GET /api/v1/backups/",
    "POST /api/v1/backups/",
    "POST /api/v1/backups/import/",
    "GET /api/v1/backups/{pk}/",
    "DELETE /api/v1/backups/{pk}/",
    "GET /api/v1/backups/{pk}/download/",
    "POST /api/v1/backups/{pk}/verify/",
    "POST /api/v1/backups/{pk}/cancel/",
    "POST /api/v1/backups/{pk}/restore/",
    "GET /api/v1/restores/{pk}/",
    "GET /api/v1/checkpoints/",
    "POST /api/v1/checkpoints/",
    "GET /api/v1/checkpoints/{pk}/",
    "DELETE /api/v1/checkpoints/{pk}/",
    "POST /api/v1/checkpoints/{pk}/rollback/",
    "GET /api/v1/sandboxes/{pk}/transfer/files/",
    "POST /api/v1/sandboxes/{pk}/transfer/upload/",
    "GET /api/v1/sandboxes/{pk}/transfer/download/",
    "GET /api/v1/incidents/",
    "POST /api/v1/incidents/",
    "GET /api/v1/incidents/{pk}/",
    "POST /api/v1/incidents/{pk}/steps/",
    "POST /api/v1/incidents/{pk}/close/",
    "GET /api/v1/incidents/{pk}/report.md",
    "GET /api/v1/incidents/{pk}/report.html",
    "GET /api/v1/incidents/{pk}/evidence/",
}


# A sandbox's and a team's standing rules: its daily backup and checkpoint retention, the team's
# second-factor rule, resource policy and freeze; the security checklist; the page's read-only
# cards (refused connections, agent activity, files changed lately, disk use).
THIRD_SLICE = {
    "GET /api/v1/sandboxes/{pk}/backup-schedule/",
    "PUT /api/v1/sandboxes/{pk}/backup-schedule/",
    "DELETE /api/v1/sandboxes/{pk}/backup-schedule/",
    "GET /api/v1/sandboxes/{pk}/checkpoint-retention/",
    "PUT /api/v1/sandboxes/{pk}/checkpoint-retention/",
    "PUT /api/v1/teams/{pk}/second-factor/",
    "POST /api/v1/teams/{pk}/freeze/",
    "GET /api/v1/teams/{pk}/policy/",
    "PUT /api/v1/teams/{pk}/policy/",
    "GET /api/v1/teams/{pk}/agent-policy/",
    "GET /api/v1/teams/{pk}/allowlist/",
    "PUT /api/v1/teams/{pk}/allowlist/",
    "PUT /api/v1/teams/{pk}/agent-policy/",
    "GET /api/v1/teams/{pk}/checklist/",
    "POST /api/v1/teams/{pk}/checklist/",
    "PUT /api/v1/teams/{pk}/checklist/{item}/",
    "DELETE /api/v1/teams/{pk}/checklist/{item}/",
    "GET /api/v1/sandboxes/{pk}/checklist/",
    "PUT /api/v1/sandboxes/{pk}/checklist/{item}/",
    "GET /api/v1/sandboxes/{pk}/refused/",
    "GET /api/v1/sandboxes/{pk}/decisions.jsonl",
    "GET /api/v1/sandboxes/{pk}/refused/grouped/",
    "GET /api/v1/sandboxes/{pk}/agent-activity/",
    "GET /api/v1/sandboxes/{pk}/activity/",
    "GET /api/v1/sandboxes/{pk}/storage/",
}


def _rows_to_hit(sandbox) -> None:
    """Rows of each kind the second slice reads, beside the random ids: a finished backup with its
    file and a restore of it, a checkpoint row (the fast tier has no storage pool: acting on it is
    refused, as it would be), a file in exports/, and an open incident with an evidence archive."""
    from backups import services as backups
    from backups.models import Restore
    from incidents.models import Incident
    from sandboxes.models import Sandbox
    from storage.models import Checkpoint
    from tests.backups.helpers import backup_row, hostile_archive
    from tests.backups.helpers import member as archive_member
    from tests.backups.test_archive import CONFIG

    path = backups.backup_root() / f"{sandbox.name}-fuzzed.tar.gz"
    config = {**CONFIG, "name": sandbox.name}
    backup = backup_row(sandbox, path, hostile_archive(path, [archive_member("workspace/Projects/a", b"a")], config=config), config)
    Restore.objects.create(backup=backup, backup_name=backup.file_name, sandbox=sandbox, status="done", requested_by_name="test")
    Checkpoint.objects.create(sandbox=sandbox, snapshot="20260101-000000-fuzzed", created_by_name="test")
    (sandbox.workspace_path / "exports" / "out.txt").write_text("out")
    evidence = settings_module.EVIDENCE_ROOT / f"{sandbox.name}-evidence.tar.gz"
    evidence.parent.mkdir(parents=True, exist_ok=True)
    evidence.write_bytes(b"evidence")
    Incident.objects.create(
        sandbox=sandbox, team=sandbox.team, sandbox_name=sandbox.name, severity="low", summary="fuzzed", evidence_file=evidence.name
    )
    Sandbox.objects.filter(pk=sandbox.pk).update(on_hold=True)  # as incident_declare holds it
    from pathlib import Path

    from agents import otlp
    from agents import services as agents

    sample = (Path(__file__).parent.parent / "agents" / "claude_logs.json").read_bytes()
    agents.record_events([(sandbox.pk, otlp.event_rows(sample, record_prompts=False))])


OPERATIONS = FIRST_SLICE | SECOND_SLICE | THIRD_SLICE


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx, value) -> bytes:
    """An audit export to check is sent as its text (Schemathesis knows no JSON Lines)."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


def _real_objects(team, sandbox) -> None:
    """Rows the generated ids may land on (the first of each kind): secrets of the sandbox and of
    the team, a join token, and the audit events they write."""
    from datetime import timedelta

    from django.utils import timezone

    from hosts.models import JoinToken
    from sandboxes import secrets
    from teams.permissions import SystemActor

    secrets.secret_set(actor=SystemActor("test"), sandbox=sandbox, name="FUZZ_TOKEN", value="s3cr3t-fuzz-value")
    secrets.secret_set(actor=SystemActor("test"), team=team, name="TEAM_TOKEN", value="s3cr3t-team-value")
    JoinToken.objects.create(name="far-1", secret_sha256="0" * 64, created_by_name="test", expires_at=timezone.now() + timedelta(hours=1))


# Every configuration runs with `make test` (each the whole example budget: seconds apiece).
THOROUGH = pytest.mark.slow


# A quick run: every operation, a few examples each (the operations are many).
FAST_EXAMPLES = 2


@pytest.mark.parametrize(
    ("role", "scope", "examples"),
    [
        pytest.param("admin", "read", EXAMPLES, marks=THOROUGH),
        pytest.param("admin", "operate", EXAMPLES, marks=THOROUGH),
        # A few examples of every operation, quickly (ten seconds of CPU: in `make test`, not `make check`).
        pytest.param("admin", "admin", FAST_EXAMPLES, id="admin-admin-fast", marks=THOROUGH),
        pytest.param("admin", "admin", EXAMPLES, marks=THOROUGH),
        pytest.param("operator", "admin", EXAMPLES, marks=THOROUGH),
        pytest.param("viewer", "admin", EXAMPLES, marks=THOROUGH),
        pytest.param("superuser", "admin", EXAMPLES, marks=THOROUGH),
        pytest.param("admin", None, EXAMPLES, marks=THOROUGH),
    ],
)
def test_the_served_schema_holds_for_every_operation(
    django_user_model, team, make_sandbox, fake_engine, clean_workspace, wsgi_keeps_the_test_connection, role, scope, examples
):
    """scope None: the same calls with no token at all (each one a documented 401)."""
    sandbox = make_sandbox("fuzzed")  # an id that exists, beside the random ones
    _real_objects(team, sandbox)
    _rows_to_hit(sandbox)
    if role == "superuser":
        user = django_user_model.objects.create_superuser("fuzz-root", password="pw-123456789")
    else:
        user = member(django_user_model, f"fuzz-{role}", team, role)
    # A confirmed second factor: a generated "required: true" for the team must not turn the
    # token away for the rest of the run (a member without one is refused, as intended).
    TOTPDevice.objects.create(user=user, name="fuzz", confirmed=True)
    token = {"Authorization": f"Bearer {token_for(user, scope or 'read')}"}
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, headers=token)
    assert schema.raw_schema["openapi"] == "3.1.0"
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == OPERATIONS
    answered: set[int] = set()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            answered.update(_run(operation, mode, token if scope else {}, examples))
    if scope is None:
        assert answered == {401}
    else:
        assert {200, 400, 404} <= answered, answered  # (negative cases may spoil the token: 401 too)


def test_the_schema_and_its_page_need_a_sign_in_or_a_token(client, django_user_model, team):
    assert client.get("/api/schema/").status_code == 401
    docs = client.get("/api/docs/")
    assert docs.status_code == 302 and docs["Location"].startswith("/login/")
    user = member(django_user_model, "reader", team, "viewer")
    assert client.get("/api/schema/?format=json", HTTP_AUTHORIZATION=f"Bearer {token_for(user, 'read')}").json()["openapi"] == "3.1.0"
    client.force_login(user)
    assert client.get("/api/schema/?format=json").status_code == 200
    page = client.get("/api/docs/").content.decode()
    # The page's scripts and styles are the panel's own static files: nothing from a CDN.
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "http://" not in page.replace("http://testserver", "") and "https://" not in page
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(assets) >= 3
    for asset in assets:
        assert asset.startswith("/"), asset
        assert client.get(asset).status_code == 200, asset
