"""The audit trail is the one hook point: each event kind a webhook can choose becomes a delivery
to the webhooks that chose it (of the event's team; every team's for a host-wide one), and
nothing else does."""

import uuid

import pytest

from audit.services import audit_record
from sandboxes import engine
from sandboxes import services as sandbox_services
from sandboxes.models import Sandbox
from webhooks import services
from webhooks.events import EVENT_NAMES
from webhooks.models import Delivery

from .conftest import declare

pytestmark = pytest.mark.django_db(transaction=True)
ACTOR = sandbox_services.SystemActor("test")


def every_event_hook(team, admin):
    return services.webhook_create(
        actor=admin, team=team, url="http://198.18.0.1/h", chosen_events=sorted(EVENT_NAMES), allow_private=False
    ).webhook


def events_of(webhook) -> list[str]:
    return list(Delivery.objects.filter(webhook=webhook).order_by("id").values_list("event", flat=True))


def test_each_event_kind_makes_a_delivery(queued, make_sandbox, fake_engine, clean_workspace, team, team_admin, other_team):
    hook = every_event_hook(team, team_admin)
    other = every_event_hook(other_team, team_admin.__class__.objects.create_superuser("root2", "", "pw-root-2"))
    sandbox = make_sandbox("hooked")
    # Died: the container went down with no action of the panel under way (the reconciler sees it).
    fake_engine.stop(sandbox.container_id, timeout=0)
    assert sandbox_services.sandbox_sync(sandbox=sandbox)
    # OOM-killed: Docker's event, as the events watcher records it; a burst is told once.
    for _ in range(3):
        sandbox_services.record_engine_event(
            event={"action": "oom", "id": sandbox.container_id, "attributes": {engine.LABEL_UUID: str(sandbox.uuid), "name": "x"}}
        )
    declare(team)
    audit_record(actor=None, action="incident.closed", target="web-1", team_id=team.pk, details={"incident": 7, "resolution": "fixed"})
    audit_record(actor=None, action="backup.failed", target="web-1", team_id=team.pk, details={"backup": "b.tar.gz", "detail": "disk full"})
    audit_record(actor=None, actor_name="egress", action="egress.failed", target="ccpanel0", details={"error": "iptables: gone"})
    audit_record(
        actor=None, action="sandbox.quota_high", target="web-1", sandbox_uuid=uuid.uuid4(), team_id=team.pk, details={"percent": 91.0}
    )
    assert events_of(hook) == [
        "sandbox.died",
        "sandbox.oom_killed",
        "incident.declared",
        "incident.closed",
        "backup.failed",
        "egress.failed",
        "sandbox.quota_high",
    ]
    assert events_of(other) == ["egress.failed"], "another team hears only of the host-wide event"
    died = Delivery.objects.get(webhook=hook, event="sandbox.died").payload
    assert died["sandbox"] == {"uuid": str(sandbox.uuid), "name": "hooked"} and died["details"]["to"] == "stopped"
    egress = Delivery.objects.get(webhook=other, event="egress.failed").payload
    assert egress["details"] == {} and egress["team"]["slug"] == "other", "the host's internals stay on the panel"
    assert len(queued) == Delivery.objects.count()


def test_the_panels_own_stop_is_no_death(queued, make_sandbox, fake_engine, clean_workspace, team, team_admin):
    hook = every_event_hook(team, team_admin)
    sandbox = make_sandbox("stopped-by-us")
    sandbox_services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="stop", enqueue=False)
    sandbox_services.sandbox_perform(sandbox_id=sandbox.pk, action="stop")
    sandbox_services.record_engine_event(
        event={"action": "die", "id": sandbox.container_id, "attributes": {engine.LABEL_UUID: str(sandbox.uuid), "exitCode": "0"}}
    )
    assert Sandbox.objects.get(pk=sandbox.pk).status == Sandbox.Status.STOPPED
    assert events_of(hook) == []


def test_only_the_chosen_events_of_the_team_are_delivered(queued, team, team_admin, other_team):
    chosen = services.webhook_create(actor=team_admin, team=team, url="http://198.18.0.1/h", chosen_events=["backup.failed"]).webhook
    declare(team)  # not chosen
    audit_record(actor=None, action="backup.failed", target="x", team_id=other_team.pk, details={})  # another team's
    audit_record(actor=None, action="backup.done", target="x", team_id=team.pk, details={})  # no webhook event
    assert events_of(chosen) == [] and queued == []


def test_the_history_is_bounded(queued, settings, team, team_admin):
    settings.WEBHOOK_KEEP_DELIVERIES = 3
    hook = services.webhook_create(actor=team_admin, team=team, url="http://198.18.0.1/h", chosen_events=["incident.declared"]).webhook
    for n in range(5):
        declare(team, incident=n)
    kept = Delivery.objects.filter(webhook=hook).order_by("id")
    assert [d.payload["details"]["incident"] for d in kept] == [2, 3, 4]


def test_the_sweep_takes_back_a_dead_attempt_and_queues_a_lost_task(queued, team, team_admin):
    from datetime import timedelta

    from django.utils import timezone

    hook = services.webhook_create(actor=team_admin, team=team, url="http://198.18.0.1/h", chosen_events=["incident.declared"]).webhook
    declare(team)
    declare(team)
    dead, lost = Delivery.objects.filter(webhook=hook).order_by("id")
    long_ago = timezone.now() - timedelta(hours=1)
    Delivery.objects.filter(pk=dead.pk).update(status=Delivery.Status.SENDING, attempts=1, claimed_at=long_ago)
    Delivery.objects.filter(pk=lost.pk).update(next_attempt_at=long_ago)
    queued.clear()
    services.deliveries_sweep()
    dead.refresh_from_db()
    assert dead.status == Delivery.Status.PENDING and "worker stopped" in dead.last_error
    assert (lost.pk, 0.0) in queued
