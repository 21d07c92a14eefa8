"""Work is queued once the database has committed it; a queue that refuses it ends the job."""

from unittest import mock

import pytest
from django.db import transaction

from controlpanel.queue import enqueue_on_commit

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_task_is_sent_only_when_the_transaction_commits():
    task, refused = mock.Mock(), mock.Mock()
    with transaction.atomic():
        enqueue_on_commit(task, 7, "stop", what="stop for sandbox 7", on_refused=refused)
        task.delay.assert_not_called()
    task.delay.assert_called_once_with(7, "stop")
    refused.assert_not_called()


def test_a_rolled_back_transaction_sends_nothing():
    task, refused = mock.Mock(), mock.Mock()
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue_on_commit(task, 7, what="backup 7", on_refused=refused)
        raise RuntimeError("rolled back")
    task.delay.assert_not_called()
    refused.assert_not_called()


def test_a_queue_that_cannot_take_the_task_ends_the_job_instead(caplog):
    task, refused = mock.Mock(), mock.Mock()
    task.delay.side_effect = ConnectionRefusedError("Redis is down")
    with transaction.atomic():
        enqueue_on_commit(task, 7, what="backup 7", on_refused=refused)
    refused.assert_called_once_with()
    assert "could not queue backup 7: Redis is down" in caplog.text
