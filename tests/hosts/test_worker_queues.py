"""The panel's lifecycle worker as the Procfile starts it (`-Q` from `manage.py host queues`),
and a host added while it runs: the worker starts reading that host's queue and runs its task."""

import socket
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command

from controlpanel.celery import app
from hosts import queues
from hosts import services as host_services
from sandboxes.tasks import host_reconcile_task
from tests.support.paths import ROOT
from tests.support.processes import Proc
from tests.support.waiting import wait_for


@pytest.mark.django_db
def test_host_queues_prints_what_each_worker_reads(capsys):
    host_services.local_host()
    call_command("host", "queues", "lifecycle")
    assert capsys.readouterr().out.strip() == f"{settings.CELERY_TASK_DEFAULT_QUEUE},{queues.lifecycle_queue('local')}"
    call_command("host", "queues", "jobs")
    assert capsys.readouterr().out.strip() == f"{queues.jobs_queue('local')},{settings.CELERY_JOBS_QUEUE}"
    call_command("host", "queues", "webhooks")
    assert capsys.readouterr().out.strip() == settings.CELERY_WEBHOOKS_QUEUE
    procfile = (ROOT / "Procfile").read_text()
    assert "webhooks: env PANEL_DB_CONN_MAX_AGE=600 .venv/bin/celery -A controlpanel worker" in procfile
    assert '-Q "$(.venv/bin/python manage.py host queues webhooks)"' in procfile


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_a_host_added_while_the_panels_worker_runs_is_served_at_once(docker_engine):
    host_services.local_host()
    procfile_line = (
        f"exec {ROOT}/.venv/bin/celery -A controlpanel worker -l INFO -c 1 -n {queues.LIFECYCLE}@%h"
        f' -Q "$({ROOT}/.venv/bin/python manage.py host queues lifecycle)"'
    )
    worker = Proc("panel-lifecycle-worker", ["bash", "-c", procfile_line])
    late = queues.lifecycle_queue("late")
    try:
        worker.wait_for_line("ready.", timeout=60)
        assert f".> {queues.lifecycle_queue('local')} " in worker.output() and f".> {late} " not in worker.output()
        assert f"{queues.LIFECYCLE}@{socket.gethostname()}" in worker.output()
        host_services.host_create(
            actor=host_services.SystemActor("test"), name="late", docker_url="tcp://198.18.59.3:2375", cpus=Decimal(1)
        )
        wait_for(lambda: f"Started consuming from {late}" in worker.output(), timeout=20, what="the worker to read the new host's queue")
        host_reconcile_task.delay("late")
        wait_for(lambda: "host_reconcile_task" in worker.output() and "succeeded" in worker.output(), timeout=30, what="the task to run")
    finally:
        worker.stop()
        with app.connection_for_write() as conn:
            conn.default_channel.client.delete(late, queues.jobs_queue("late"))
