"""A Celery worker's kept database connection (controlpanel.celery, PANEL_DB_CONN_MAX_AGE) never
carries a transaction from one task to the next.

Found by review: a task's soft time limit is an exception raised by a signal handler, anywhere
in Python code. Landing in `transaction.atomic()`'s entry after the BEGIN was sent and before
Django recorded it, it leaves the connection inside a transaction that Django believes is not
there: nothing rolls it back, and Django's own check between tasks (close_if_unusable_or_obsolete)
keeps the connection. The next tasks of that worker then write into a transaction that is never
committed (on SQLite it also holds the database's one write lock: every other process waits, then
fails with "database is locked"), for up to ten minutes. Before connections were kept, Celery
closed them after every task, which ended such a transaction.
"""

import threading
from types import SimpleNamespace

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection, transaction

from controlpanel.celery import close_old_database_connections
from teams.models import Team

pytestmark = pytest.mark.django_db(transaction=True)

WORKER_TASK = SimpleNamespace(request=SimpleNamespace(is_eager=False))


@pytest.fixture
def kept_connection(monkeypatch):
    """The test's connection as a worker's is: kept for ten minutes between tasks."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 600)
    connection.close()
    connection.ensure_connection()
    yield
    connection.close()


def _interrupted_after_begin(monkeypatch) -> None:
    """The soft time limit's exception, raised right after atomic()'s BEGIN reached the database
    (whichever way this backend begins a transaction)."""
    for name in ("_start_transaction_under_autocommit", "_set_autocommit"):
        real = getattr(connection, name, None)
        if real is None:
            continue

        def interrupted(*args, _real=real, _name=name):
            _real(*args)
            if _name == "_start_transaction_under_autocommit" or args == (False,):
                raise SoftTimeLimitExceeded()

        monkeypatch.setattr(connection, name, interrupted)


def _on_another_connection(query):
    """`query()`'s result, run in a thread of its own: on a database connection of its own."""
    found: list = []

    def run():
        try:
            found.append(query())
        finally:
            connection.close()

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    return found[0] if found else None


def _seen_by_another_process(name: str) -> bool:
    return _on_another_connection(lambda: Team.objects.filter(name=name).exists()) is True


def test_a_task_interrupted_inside_begin_leaves_no_transaction_to_the_next(kept_connection, monkeypatch):
    with monkeypatch.context() as m:
        _interrupted_after_begin(m)
        with pytest.raises(SoftTimeLimitExceeded):
            with transaction.atomic():
                Team.objects.create(name="never", slug="never")
    close_old_database_connections(task=WORKER_TASK)  # task_postrun, then the next task's prerun
    close_old_database_connections(task=WORKER_TASK)

    Team.objects.create(name="next task", slug="next-task")  # the next task's write, autocommitted
    assert _seen_by_another_process("next task"), "the next task's write went into the interrupted transaction"
    assert not Team.objects.filter(name="never").exists()


def test_a_clean_task_keeps_its_connection(kept_connection):
    """The control: what keeping connections is for is kept."""
    Team.objects.create(name="first", slug="first")
    raw = connection.connection
    close_old_database_connections(task=WORKER_TASK)
    Team.objects.create(name="second", slug="second")
    assert connection.connection is raw
    assert _seen_by_another_process("second")


def test_a_kept_postgresql_connection_cut_by_the_server_is_replaced_at_the_next_task(kept_connection):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: a SQLite connection is a file, never cut (the suite runs again on PostgreSQL)")
    Team.objects.create(name="before", slug="before")
    pid = connection.connection.info.backend_pid

    def terminate():
        with connection.cursor() as cursor:  # the thread's own connection
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            return cursor.fetchone()[0]

    assert _on_another_connection(terminate) is True
    close_old_database_connections(task=WORKER_TASK)  # the next task's prerun
    Team.objects.create(name="after", slug="after")  # the health check finds it cut and reconnects
    assert connection.connection.info.backend_pid != pid
    assert _seen_by_another_process("after")
