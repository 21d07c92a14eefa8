"""Through the real queue: an audit event committed, its delivery's task on Redis, a real Celery
worker (reading what the panel's workers read) sending it, and the retry after a 500 sent back
through the queue with its countdown (the default backoff's first wait, 10 s)."""

import pytest

from tests.support.waiting import wait_for
from webhooks import services
from webhooks.models import Delivery

from .conftest import declare, superuser

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def test_a_real_worker_delivers_and_retries(celery_worker, receiver, team, team_admin):
    receiver.statuses = [500]
    new = services.webhook_create(actor=superuser(), team=team, url=receiver.url, chosen_events=["incident.declared"], allow_private=True)
    receiver.secret = new.secret
    declare(team)
    wait_for(lambda: len(receiver.received) >= 1, timeout=20, what="the first attempt")
    wait_for(lambda: Delivery.objects.get().status == Delivery.Status.DELIVERED, timeout=40, what="the retry")
    delivery = Delivery.objects.get()
    assert (delivery.attempts, delivery.last_status_code) == (2, 200)
    assert [r.verified for r in receiver.received] == [True, True]
    waited = (delivery.delivered_at - delivery.created_at).total_seconds()
    assert waited >= 9, f"the retry waited its backoff ({waited:.1f} s)"
