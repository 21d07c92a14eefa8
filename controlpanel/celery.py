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
    a task run eagerly in the caller's process (a test's), whose connection is the caller's."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
