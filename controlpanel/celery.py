"""The Celery application: configuration comes from Django settings (CELERY_* names)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlpanel.settings.base")

app = Celery("controlpanel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def close_old_database_connections(task=None, **_kwargs) -> None:
    """Between two tasks a worker treats its database connection as Django does between two
    requests: closed if it is broken or older than CONN_MAX_AGE (PANEL_DB_CONN_MAX_AGE, which the
    Procfile sets for the workers), else kept: opening one cost every task a millisecond or two.
    Celery's own rule, closing it around every task, is set aside (CELERY_DB_REUSE_MAX). Not for
    a task run eagerly in the caller's process (a test's), whose connection is the caller's.

    One more rule than Django's: a connection still inside a transaction is closed (which rolls
    it back). Between tasks none should be; one is when a task's soft time limit (an exception
    raised wherever the task's code is) landed between a BEGIN and Django recording it, so that
    Django believes the connection is in autocommit: kept, the next tasks' writes would go into a
    transaction that is never committed (on SQLite, holding the database's write lock)."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections, connections

    for conn in connections.all(initialized_only=True):
        if _in_transaction(conn):
            conn.close()
    close_old_connections()


def _in_transaction(conn) -> bool:
    """Whether the driver's connection under `conn` is inside a transaction (read from the
    driver's state, no query: Django's own flags are what may be wrong)."""
    raw = conn.connection
    if raw is None:
        return False
    if conn.vendor == "sqlite":
        return bool(raw.in_transaction)
    if conn.vendor == "postgresql":
        return not raw.autocommit or raw.info.transaction_status != 0  # libpq's PQTRANS_IDLE
    return False
