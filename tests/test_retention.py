"""The retention rule scheduled backups and checkpoints share (controlpanel.retention)."""

from datetime import UTC, datetime, timedelta

from controlpanel.retention import beyond_keeping

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
# Ten items, one a day, newest first: day 0 is today.
DAYS = [NOW - timedelta(days=n) for n in range(10)]


def gone(**rule) -> list[int]:
    return [(NOW - taken).days for taken in beyond_keeping(DAYS, now=NOW, taken=lambda t: t, **rule)]


def test_the_newest_n_or_the_younger_than_d_days_are_kept_and_either_rule_keeps():
    assert gone(keep_last=3, keep_days=None) == [3, 4, 5, 6, 7, 8, 9]
    assert gone(keep_last=None, keep_days=5) == [6, 7, 8, 9]  # five days ago is exactly the cutoff: kept
    assert gone(keep_last=2, keep_days=4) == [5, 6, 7, 8, 9]  # the age rule keeps more than the count
    assert gone(keep_last=8, keep_days=1) == [8, 9]  # the count rule keeps more than the age
    assert gone(keep_last=None, keep_days=None) == []  # no rule: nothing goes
    assert gone(keep_last=20, keep_days=None) == []


def test_an_age_past_the_calendar_keeps_everything_instead_of_failing():
    """A schedule's "keep for days" of a million (the form took any positive number) made every
    rotation raise OverflowError: nothing was ever rotated, and each scheduled backup's task failed."""
    assert gone(keep_last=2, keep_days=10**6) == []
    assert gone(keep_last=None, keep_days=2**31 - 1) == []
