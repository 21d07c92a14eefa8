"""The incident endpoints: the wizard's services, each queued step a 202 whose state is read at
the incident's url, the report and the evidence as the pages give them."""

import hashlib
import os

import pytest
from django.conf import settings

from audit.models import AuditEvent
from incidents import services
from incidents.models import Incident
from sandboxes.models import Sandbox
from teams.models import Team

from .helpers import auth, member, post_json, token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def box(make_sandbox, fake_engine, clean_workspace):
    return make_sandbox("suspect")


def declared(client, token, box) -> dict:
    answer = post_json(client, "/api/v1/incidents/", token, {"sandbox": box.pk, "severity": "high", "summary": "odd traffic"})
    assert answer.status_code == 202, answer.content
    return answer.json()


def test_declare_is_202_holds_the_sandbox_and_its_pause_is_read_at_the_url(client, django_user_model, team, box, fake_engine):
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    body = declared(client, token, box)
    incident = Incident.objects.get()
    assert body["url"] == f"/api/v1/incidents/{incident.pk}/" and body["incident"]["state"] == "running"
    assert Sandbox.objects.get(pk=box.pk).on_hold
    event = AuditEvent.objects.get(action="incident.declared")
    assert event.details["via"] == "api" and event.details["token"] == token[:12] and event.details["severity"] == "high"
    services.incident_step_perform(incident_id=incident.pk)  # what the worker does with the queued step
    shown = client.get(body["url"], **auth(token)).json()
    assert shown["step"] == "declare" and shown["state"] == "done" and shown["next_step"] == "snapshot"
    assert fake_engine.container_state(Sandbox.objects.get(pk=box.pk).container_id).status == "paused"
    assert [e["step"] for e in shown["events"]][:1] == ["declare"]
    again = post_json(client, "/api/v1/incidents/", token, {"sandbox": box.pk, "severity": "low", "summary": "again"})
    assert again.status_code == 409 and "already has an open incident" in again.json()["detail"]


def test_steps_follow_the_wizard_and_close_releases_the_sandbox(client, django_user_model, team, box):
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    url = declared(client, token, box)["url"]
    incident = Incident.objects.get()
    running = post_json(client, f"{url}steps/", token, {"step": "snapshot"})
    assert running.status_code == 409 and "not the next step" in running.json()["detail"]
    services.incident_step_perform(incident_id=incident.pk)
    wrong = post_json(client, f"{url}steps/", token, {"step": "stop"})
    assert wrong.status_code == 409 and "not the next step" in wrong.json()["detail"]
    assert post_json(client, f"{url}steps/", token, {"step": "close"}).status_code == 400  # close is its own endpoint
    started = post_json(client, f"{url}steps/", token, {"step": "snapshot"})
    assert started.status_code == 202 and started.json()["incident"]["step"] == "snapshot"
    assert started.json()["incident"]["state"] == "running" and started.json()["url"] == url
    assert AuditEvent.objects.get(action="incident.snapshot").details["via"] == "api"
    busy = post_json(client, f"{url}close/", token, {"resolution": "fine"})
    assert busy.status_code == 409 and "still running" in busy.json()["detail"]
    Incident.objects.filter(pk=incident.pk).update(state="done")
    Sandbox.objects.filter(pk=box.pk).update(pending_action="")
    assert post_json(client, f"{url}close/", token, {"resolution": "   "}).status_code == 400
    closed = post_json(client, f"{url}close/", token, {"resolution": "false alarm", "notes": "checked"})
    assert closed.status_code == 200 and closed.json()["step"] == "close" and closed.json()["resolution"] == "false alarm"
    assert not Sandbox.objects.get(pk=box.pk).on_hold
    assert AuditEvent.objects.get(action="incident.closed").details["via"] == "api"
    listed = client.get("/api/v1/incidents/?open=false", **auth(token)).json()
    assert [r["id"] for r in listed["results"]] == [incident.pk]
    assert client.get("/api/v1/incidents/?open=true", **auth(token)).json()["count"] == 0


def test_the_report_and_the_evidence_download_as_the_pages_give_them(client, django_user_model, team, box):
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    url = declared(client, token, box)["url"]
    incident = Incident.objects.get()
    assert client.get(f"{url}evidence/", **auth(token)).status_code == 404  # no archive yet
    evidence = settings.EVIDENCE_ROOT / f"incident-{incident.pk}-test.tar.gz"
    evidence.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(200_000)
    evidence.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    Incident.objects.filter(pk=incident.pk).update(evidence_file=evidence.name, evidence_sha256=digest, evidence_size=len(data))
    try:
        shown = client.get(url, **auth(token)).json()
        assert shown["evidence"] == f"{url}evidence/" and shown["report"]["markdown"] == f"{url}report.md"
        download = client.get(shown["evidence"], **auth(token))
        assert download.status_code == 200 and download.streaming and b"".join(download.streaming_content) == data
        event = AuditEvent.objects.get(action="incident.evidence_downloaded")
        assert event.details["sha256"] == digest and event.details["via"] == "api"
        markdown = client.get(shown["report"]["markdown"], **auth(token))
        assert markdown.status_code == 200 and markdown["Content-Type"].startswith("text/markdown")
        assert digest in markdown.content.decode() and "odd traffic" in markdown.content.decode()
        page = client.get(shown["report"]["html"], **auth(token))
        assert page.status_code == 200 and page["Content-Type"].startswith("text/html") and digest in page.content.decode()
        reader = token_for(member(django_user_model, "eyes", team, "viewer"), "read")
        assert client.get(f"{url}report.md", **auth(reader)).status_code == 200  # as the page: whoever sees it
        assert client.get(f"{url}evidence/", **auth(reader)).status_code == 403  # operators only
    finally:
        evidence.unlink()


def test_viewers_and_read_tokens_declare_nothing_and_strangers_see_nothing(client, django_user_model, team, box):
    viewer = token_for(member(django_user_model, "eyes", team, "viewer"), "admin")
    reader = token_for(member(django_user_model, "ops", team, "operator"), "read")
    body = {"sandbox": box.pk, "severity": "high", "summary": "x"}
    assert post_json(client, "/api/v1/incidents/", viewer, body).status_code == 403
    assert post_json(client, "/api/v1/incidents/", reader, body).status_code == 403
    assert not Incident.objects.exists() and not Sandbox.objects.get(pk=box.pk).on_hold
    operator = token_for(member(django_user_model, "op", team, "operator"), "operate")
    url = declared(client, operator, box)["url"]
    stranger = token_for(member(django_user_model, "far", Team.objects.create(name="O", slug="o"), "admin"), "admin")
    for path in ("", "report.md", "report.html", "evidence/"):
        assert client.get(f"{url}{path}", **auth(stranger)).status_code == 404, path
    assert post_json(client, f"{url}close/", stranger, {"resolution": "mine"}).status_code == 404
    refused = post_json(client, "/api/v1/incidents/", stranger, {**body, "summary": "y"})
    assert refused.status_code == 400 and refused.json() == {"sandbox": ["No such sandbox."]}
    assert client.get("/api/v1/incidents/", **auth(stranger)).json()["count"] == 0


@pytest.mark.django_db(transaction=True)  # the step's task is sent once its claim commits
def test_with_the_queue_down_a_step_is_503_and_can_be_retried(client, django_user_model, team, box, broker_down):
    token = token_for(member(django_user_model, "ops", team, "operator"), "operate")
    body = declared(client, token, box)
    assert body["incident"]["state"] == "failed" and "not reachable" in body["incident"]["step_detail"]
    assert Sandbox.objects.get(pk=box.pk).on_hold  # declared all the same: held, its pause to be retried
    answer = post_json(client, f"{body['url']}steps/", token, {"step": "declare"})
    assert answer.status_code == 503 and "not reachable" in answer.json()["detail"] and answer.json()["url"] == body["url"]
    assert Incident.objects.get().state == "failed" and Sandbox.objects.get(pk=box.pk).pending_action == ""
