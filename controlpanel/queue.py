"""Sending work to the task queue (Celery on Redis) once the database has committed it."""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction

log = logging.getLogger(__name__)


QUEUE_DOWN = "the task queue (Redis) is not reachable"


@dataclass
class Queued:
    """What became of an enqueue once the transaction committed: `refused` is the reason the
    queue did not take the task (empty while not known, or when it did)."""

    refused: str = ""


def enqueue_on_commit(task, *args, what: str, on_refused: Callable[[], None]) -> Queued:
    """Queue `task.delay(*args)` once the current transaction commits (a worker must find the
    rows it is given). If the queue cannot take it, log that and call `on_refused`, which ends
    the job with the reason, rather than leave a sandbox claimed by work no worker will run; the
    returned Queued says so to a caller that must not report the job as under way.
    `what` names the job in the log ("backup 12")."""
    queued = Queued()

    def send():
        try:
            task.delay(*args)
        except Exception as exc:  # noqa: BLE001 - kombu raises several types for "broker down"
            log.warning("could not queue %s: %s", what, exc)
            queued.refused = QUEUE_DOWN
            on_refused()

    transaction.on_commit(send)
    return queued
