import sys
from collections.abc import Iterator

import pytest

from tests.support.processes import Proc


@pytest.fixture
def agent_receiver(django_db_setup, docker_engine) -> Iterator[Proc]:
    """The agent-activity receiver (`manage.py agent_receiver`), as the Procfile runs it."""
    p = Proc("agent-receiver", [sys.executable, "manage.py", "agent_receiver"], AGENT_RECEIVER_RECONCILE_SECONDS="1")
    try:
        p.wait_for_line("receiving agent events", timeout=30)
        yield p
    finally:
        p.stop()
