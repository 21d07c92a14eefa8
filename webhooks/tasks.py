"""Celery tasks of the webhooks: ids in, one service each. Deliveries run on their own queue
(CELERY_WEBHOOKS_QUEUE, the panel machine's webhooks worker, which holds the secrets key): a
slow receiver holds that worker, never the lifecycle one. The quota watch runs on each host's
queue (it reads that machine's storage pool)."""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from hosts.queues import serves
from hosts.selectors import enabled_host_names

from . import quota, services

log = logging.getLogger(__name__)


@shared_task(soft_time_limit=settings.WEBHOOK_TOTAL_SECONDS + 15, time_limit=settings.WEBHOOK_TOTAL_SECONDS + 30)
def delivery_task(delivery_id: int) -> None:
    """One attempt at a delivery. Safe to run twice (the service claims the row); a retry is
    queued by the service with its backoff, and a run cut off by the time limit is taken back
    by the sweep."""
    try:
        services.delivery_attempt(delivery_id=delivery_id)
    except SoftTimeLimitExceeded:
        log.warning("webhook delivery %s ran past its time limit; the sweep takes it back", delivery_id)


@shared_task
def delivery_sweep_task() -> int:
    """Periodic (the beat): attempts whose worker died and deliveries whose task was lost."""
    return services.deliveries_sweep()


@shared_task
def quota_watch_task() -> int:
    """Periodic (the beat): one host_quota_watch_task per enabled host, on its own queue."""
    names = enabled_host_names()
    for name in names:
        host_quota_watch_task.delay(name)
    return len(names)


@shared_task
def host_quota_watch_task(host_name: str) -> int:
    """The quota watch of one host's sandboxes (webhooks.quota), by a worker that serves it."""
    if not serves(host_name):
        log.warning("the quota watch for host %s refused: this worker serves %s", host_name, settings.PANEL_HOST)
        return 0
    return quota.quota_watch(host_name=host_name)
