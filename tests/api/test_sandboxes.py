"""The sandbox endpoints: the dashboard's visibility, the form's rules, no 500 for any input."""

import json
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from sandboxes.models import Sandbox
from teams.models import Team
from tests.support.docker import TEST_IMAGE

from .helpers import auth, member, post_json, token_for

pytestmark = pytest.mark.django_db


def row(team, name, **kwargs):
    """A sandbox row as the list shows it (no container: the list never asks Docker)."""
    fields = dict(image=TEST_IMAGE, memory_mb=256, cpus=Decimal("1"), pids_limit=100, status="running")
    fields.update(kwargs)
    return Sandbox.objects.create(name=name, team=team, **fields)


def test_the_list_shows_what_the_dashboard_shows(client, django_user_model, team):
    other = Team.objects.create(name="Other", slug="other")
    row(team, "ours-a")
    row(team, "ours-b", status="stopped")
    row(other, "theirs")
    row(team, "gone", status="destroyed")
    user = member(django_user_model, "dev", team, "viewer")
    body = client.get("/api/v1/sandboxes/", **auth(token_for(user, "read"))).json()
    assert [s["name"] for s in body["results"]] == ["ours-a", "ours-b"]
    assert body["count"] == 2 and body["next"] is None
    superuser = django_user_model.objects.create_superuser("root", "", "pw-123456789")
    names = [s["name"] for s in client.get("/api/v1/sandboxes/", **auth(token_for(superuser, "read"))).json()["results"]]
    assert names == ["ours-a", "ours-b", "theirs"]


def test_the_list_filters_and_pages(client, django_user_model, team, settings):
    settings.SANDBOX_PAGE_SIZE = 2
    other = Team.objects.create(name="Other", slug="other")
    for name in ("alpha", "beta", "gamma"):
        row(team, name)
    row(other, "delta", status="stopped")
    admin = django_user_model.objects.create_superuser("root", "", "pw-123456789")
    token = token_for(admin, "read")
    get = lambda query: client.get(f"/api/v1/sandboxes/?{query}", **auth(token)).json()  # noqa: E731
    first = get("")
    assert [s["name"] for s in first["results"]] == ["alpha", "beta"] and first["count"] == 4
    assert first["next"].endswith("page=2")
    assert [s["name"] for s in get("page=2")["results"]] == ["delta", "gamma"]
    assert [s["name"] for s in get(f"team={other.pk}")["results"]] == ["delta"]
    assert [s["name"] for s in get("status=stopped")["results"]] == ["delta"]
    assert [s["name"] for s in get("q=AMM")["results"]] == ["gamma"]
    assert get("host=local")["count"] == 4 and get("host=nowhere")["count"] == 0


def test_the_list_costs_the_same_queries_for_2_or_40_rows(client, django_user_model, team):
    user = member(django_user_model, "dev", team, "operator")
    token = token_for(user, "read")
    client.get("/api/v1/sandboxes/", **auth(token))  # the first use is audited once; not counted

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/api/v1/sandboxes/", **auth(token)).status_code == 200
        return len(ctx.captured_queries)

    for i in range(2):
        row(team, f"few-{i}")
    few = queries()
    for i in range(38):
        row(team, f"many-{i:02}")
    assert queries() == few


def test_the_lists_rows_answer_what_the_serializer_answers(django_user_model, team):
    """The list builds its rows from values (for speed); SandboxSerializer over model objects,
    which the schema describes, must answer the same for every kind of row, actions included."""
    from datetime import timedelta

    from django.utils import timezone

    from api.serializers import SandboxSerializer, sandbox_rows
    from hosts.models import Host
    from sandboxes import selectors, services

    away = Host.objects.create(name="away", docker_url="tcp://198.18.0.9:2376", last_heartbeat=timezone.now() - timedelta(hours=1))
    row(team, "plain")
    row(team, "odd", cpus=Decimal("1.25"), status="error", status_detail="The container exited with code 3.", health="unhealthy")
    row(team, "busy", cpus=Decimal("0.5"), status="stopped", pending_action="start", on_hold=True, oom_kills=2, checklist_failed=3)
    row(team, "paused", status="paused", pending_action="stop")
    row(team, "far", host=away, status="stopped")
    admin = django_user_model.objects.create_superuser("root", "", "pw-123456789")
    objects = list(selectors.sandbox_page(user=admin, roles={}))
    values = list(selectors.sandbox_page(user=admin, roles={}, values=True))
    context = {"actions_of": lambda sandbox: services.allowed_actions(sandbox, role="operator")}
    rows = sandbox_rows(
        values,
        actions_of=lambda r, *, unreachable: services.actions_allowed(
            status=r["status"], on_hold=r["on_hold"], pending_action=r["pending_action"], unreachable=unreachable, role="operator"
        ),
    )
    assert rows == SandboxSerializer(objects, many=True, context=context).data
    assert [(r["name"], r["cpus"], bool(r["unreachable"]), r["actions"]) for r in rows] == [
        ("busy", "0.50", False, []),
        ("far", "1.00", True, []),
        ("odd", "1.25", False, ["start", "stop", "restart", "reset", "clean"]),
        ("paused", "1.00", False, []),  # its stop under way
        ("plain", "1.00", False, ["stop", "restart", "pause", "reset", "clean"]),
    ]
    assert list(rows[0]) == list(SandboxSerializer().fields)


def test_another_teams_sandbox_is_not_found_like_one_that_never_was(client, django_user_model, team):
    other = Team.objects.create(name="Other", slug="other")
    theirs = row(other, "theirs")
    token = token_for(member(django_user_model, "dev", team, "admin"))
    missing = client.get("/api/v1/sandboxes/999999/", **auth(token))
    hidden = client.get(f"/api/v1/sandboxes/{theirs.pk}/", **auth(token))
    assert missing.status_code == hidden.status_code == 404 and missing.json() == hidden.json()
    acted = post_json(client, f"/api/v1/sandboxes/{theirs.pk}/stop/", token)
    assert acted.status_code == 404 and acted.json() == missing.json()
    for pk in ("0", "-1", "abc", "1e9", str(10**30), "%C3%A9"):
        assert client.get(f"/api/v1/sandboxes/{pk}/", **auth(token)).status_code == 404
    assert post_json(client, f"/api/v1/sandboxes/{theirs.pk}/explode/", token).status_code == 404
    assert Sandbox.objects.get(pk=theirs.pk).pending_action == ""


def test_create_goes_through_the_service(client, django_user_model, team, fake_engine, clean_workspace):
    user = member(django_user_model, "dev", team, "operator")
    token = token_for(user, "operate")
    answer = post_json(client, "/api/v1/sandboxes/", token, {"team": team.pk, "name": "api-made", "memory_mb": 256, "cpus": "0.5"})
    assert answer.status_code == 202, answer.content
    body = answer.json()
    sandbox = Sandbox.objects.get(name="api-made")
    assert body["url"] == f"/api/v1/sandboxes/{sandbox.pk}/" == answer["Location"] and body["queued"] is True
    assert body["sandbox"]["status"] == "creating" and body["sandbox"]["pending_action"] == "start"
    assert sandbox.created_by == user and sandbox.cpus == Decimal("0.5") and sandbox.image == TEST_IMAGE
    event = AuditEvent.objects.get(action="sandbox.create")
    assert (
        event.actor == user and event.details["via"] == "api" and event.details["token"] == token.split("_")[0] + "_" + token.split("_")[1]
    )


def test_create_answers_the_services_refusals_with_400(client, django_user_model, team, fake_engine, clean_workspace, settings):
    token = token_for(member(django_user_model, "dev", team, "operator"), "operate")
    bad = post_json(client, "/api/v1/sandboxes/", token, {"team": team.pk, "name": "Bad Name!", "memory_mb": 1, "image": "nope:latest"})
    assert bad.status_code == 400
    assert set(bad.json()) >= {"name", "memory_mb", "image"}
    settings.SANDBOX_MOUNT_ROOTS = []
    mounts = {"team": team.pk, "name": "mounted", "extra_mounts": [{"host_path": "/etc", "container_path": "/workspace/etc"}]}
    refused = post_json(client, "/api/v1/sandboxes/", token, mounts)
    assert refused.status_code == 400 and refused.json()["problems"]
    other = Team.objects.create(name="Other", slug="other")
    unknown_team = post_json(client, "/api/v1/sandboxes/", token, {"team": other.pk, "name": "elsewhere"})
    assert unknown_team.status_code == 400 and unknown_team.json() == {"team": ["No such team."]}
    assert not Sandbox.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"team": "abc", "name": "x"},
        {"team": 1, "name": ["x"]},
        {"team": 1, "name": "x", "memory_mb": "lots"},
        {"team": 1, "name": "x", "cpus": {"n": 1}},
        {"team": 1, "name": "x", "cpus": "1e400"},
        {"team": 1, "name": "x", "memory_mb": 10**30},
        {"team": 10**30, "name": "x"},
        {"team": 1, "name": "x", "extra_mounts": "nope"},
        {"team": 1, "name": "x", "extra_mounts": [{"host_path": 1}]},
        {"team": 1, "name": "x\x00y"},
        {"team": 1, "name": "x", "surprise": True},
        {"team": 1, "name": "x", "egress_presets": ["nothing-like-it"]},
        [1, 2, 3],
        "a string",
        None,
    ],
)
def test_wrong_types_and_unknown_fields_are_400(client, django_user_model, team, body, fake_engine):
    token = token_for(member(django_user_model, "dev", team, "operator"), "operate")
    answer = client.post("/api/v1/sandboxes/", json.dumps(body), content_type="application/json", **auth(token))
    assert answer.status_code == 400, answer.content
    assert not Sandbox.objects.exists()


def test_oversized_deep_and_foreign_bodies_are_refused(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("target")
    token = token_for(member(django_user_model, "dev", team, "admin"))
    huge = json.dumps({"team": team.pk, "name": "big", "egress_allow": "a" * 400_000})
    assert client.post("/api/v1/sandboxes/", huge, content_type="application/json", **auth(token)).status_code == 413
    deep = "[" * 100_000 + "]" * 100_000
    assert client.post("/api/v1/sandboxes/", deep, content_type="application/json", **auth(token)).status_code == 400
    nested = json.dumps({"team": team.pk, "name": "n", "extra_mounts": json.loads("[" * 25 + "]" * 25)})
    assert client.post("/api/v1/sandboxes/", nested, content_type="application/json", **auth(token)).status_code == 400
    assert client.post("/api/v1/sandboxes/", b"\xff\xfe{", content_type="application/json", **auth(token)).status_code == 400
    assert client.post("/api/v1/sandboxes/", "{not json", content_type="application/json", **auth(token)).status_code == 400
    assert client.post("/api/v1/sandboxes/", "team=1", content_type="application/x-www-form-urlencoded", **auth(token)).status_code == 415
    assert client.post(f"/api/v1/sandboxes/{sandbox.pk}/stop/", "[]", content_type="application/json", **auth(token)).status_code in (
        202,
        400,
    )
    for query in ("page=0", "page=abc", f"page={10**12}", "team=abc", f"team={10**30}", "status=destroyed", "q=" + "x" * 500, "surprise=1"):
        assert client.get(f"/api/v1/sandboxes/?{query}", **auth(token)).status_code == 400, query
    assert not Sandbox.objects.exclude(pk=sandbox.pk).exists()


def test_destroy_asks_for_the_name_as_the_page_does(client, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("named")
    token = token_for(member(django_user_model, "lead", team, "admin"))
    wrong = post_json(client, f"/api/v1/sandboxes/{sandbox.pk}/destroy/", token, {"confirm_name": "other"})
    assert wrong.status_code == 400 and "Type named exactly" in wrong.json()["confirm_name"][0]
    assert post_json(client, f"/api/v1/sandboxes/{sandbox.pk}/destroy/", token).status_code == 400
    assert Sandbox.objects.get(pk=sandbox.pk).status == "running"
    answer = post_json(client, f"/api/v1/sandboxes/{sandbox.pk}/destroy/", token, {"confirm_name": "named"})
    assert answer.status_code == 202 and answer.json()["sandbox"]["status"] == "destroying"


def test_an_action_the_state_refuses_is_409_with_the_services_message(
    client, django_user_model, team, make_sandbox, fake_engine, clean_workspace
):
    sandbox = make_sandbox("busy")
    token = token_for(member(django_user_model, "dev", team, "operator"), "operate")
    answer = post_json(client, f"/api/v1/sandboxes/{sandbox.pk}/unpause/", token)
    assert answer.status_code == 409 and answer.json()["detail"]
    assert Sandbox.objects.get(pk=sandbox.pk).pending_action == ""


@pytest.mark.django_db(transaction=True)  # the task is sent once the claim commits
def test_with_the_queue_down_an_action_is_503_and_a_create_202_not_queued(
    client, django_user_model, team, make_sandbox, fake_engine, clean_workspace, broker_down
):
    sandbox = make_sandbox("queued")
    token = token_for(member(django_user_model, "dev", team, "operator"), "operate")
    answer = post_json(client, f"/api/v1/sandboxes/{sandbox.pk}/stop/", token)
    assert answer.status_code == 503 and "not reachable" in answer.json()["detail"] and answer["Retry-After"]
    sandbox.refresh_from_db()
    assert sandbox.status == "running" and not sandbox.pending_action  # nothing under way, nothing stuck
    made = post_json(client, "/api/v1/sandboxes/", token, {"team": team.pk, "name": "unqueued"})
    assert made.status_code == 202 and made.json()["queued"] is False and "not reachable" in made.json()["reason"]
    assert made.json()["sandbox"]["status"] == "error"
