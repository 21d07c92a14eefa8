"""The disk-quota watch audits `sandbox.quota_high` once per crossing of the warning share, not at
every run, and is armed again only once use falls clearly back below it. The storage pool's
accounting is read from sysfs; here it is stood in for (the fast tier has no pool)."""

import pytest

from audit.models import AuditEvent
from storage import pool
from webhooks import quota, services, tasks
from webhooks.models import Delivery

pytestmark = pytest.mark.django_db(transaction=True)
MB = 1048576


def test_the_quota_check_fires_once_per_crossing(monkeypatch, queued, make_sandbox, fake_engine, clean_workspace, team, team_admin):
    hook = services.webhook_create(actor=team_admin, team=team, url="http://198.18.0.1/h", chosen_events=["sandbox.quota_high"]).webhook
    sandbox = make_sandbox("filling")
    type(sandbox).objects.filter(pk=sandbox.pk).update(disk_group="0/4242")
    used = {"mb": 0}
    monkeypatch.setattr(pool, "active", lambda: True)
    monkeypatch.setattr(pool, "usage", lambda group: pool.Usage(used["mb"] * MB, 100 * MB) if group == "0/4242" else None)

    def tick(mb: int) -> int:
        used["mb"] = mb
        return tasks.host_quota_watch_task(sandbox.host.name)

    assert [tick(mb) for mb in (50, 92, 95, 99, 87, 92)] == [0, 1, 0, 0, 0, 0], "87 % is not far enough below to count again"
    assert [tick(mb) for mb in (80, 91)] == [0, 1], "fell back below, then a second crossing"
    events = AuditEvent.objects.filter(action="sandbox.quota_high").order_by("seq")
    assert [e.details for e in events] == [
        {"used_mb": 92, "limit_mb": 100, "percent": 92.0},
        {"used_mb": 91, "limit_mb": 100, "percent": 91.0},
    ]
    assert all(e.sandbox_uuid == sandbox.uuid and e.actor_name == "quota" for e in events)
    deliveries = Delivery.objects.filter(webhook=hook, event="sandbox.quota_high")
    assert deliveries.count() == 2 and deliveries.first().payload["details"]["percent"] == 91.0


def test_no_pool_no_check(monkeypatch, make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("plain")
    assert quota.quota_watch(host_name=sandbox.host.name) == 0
    assert not AuditEvent.objects.filter(action="sandbox.quota_high").exists()
