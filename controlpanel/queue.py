"""Sending work to the task queue (Celery on Redis) once the database has committed it."""

import logging
from collections.abc import Callable

from django.db import transaction

log = logging.getLogger(__name__)


def enqueue_on_commit(task, *args, what: str, on_refused: Callable[[], None]) -> None:
    """Queue `task.delay(*args)` once the current transaction commits (a worker must find the
    rows it is given). If the queue cannot take it, log that and call `on_refused`, which ends
    the job with the reason, rather than leave a sandbox claimed by work no worker will run.
    `what` names the job in the log ("backup 12")."""

    def send():
        try:
            task.delay(*args)
        except Exception as exc:  # noqa: BLE001 - kombu raises several types for "broker down"
            log.warning("could not queue %s: %s", what, exc)
            on_refused()

    transaction.on_commit(send)
