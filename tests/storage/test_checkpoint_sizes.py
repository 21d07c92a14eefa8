"""The checkpoint list's sizes (storage.selectors): a walk that did not finish in its time is not
walked again at every refresh of the card."""

import pytest

from storage import pool, selectors
from storage.models import Checkpoint

pytestmark = pytest.mark.django_db


def test_a_checkpoint_too_big_to_count_is_not_walked_again_at_each_refresh(make_sandbox, fake_engine, clean_workspace, monkeypatch):
    sandbox = make_sandbox("huge")
    Checkpoint.objects.create(sandbox=sandbox, snapshot="20260101-000000-huge", created_by_name="test")
    walks = []
    monkeypatch.setattr(pool, "active", lambda: True)
    monkeypatch.setattr(pool, "exclusive", lambda path, timeout: walks.append(path))  # None: ran out of time
    monkeypatch.setattr(selectors, "_sizes", {})
    for _ in range(3):
        assert [row.size for row in selectors.checkpoints_of(sandbox)] == [None]
    assert len(walks) == 1  # the card's refreshes every 5 s do not start the walk again
