"""The one retention rule of scheduled backups and checkpoints: keep the newest `keep_last`
and/or those younger than `keep_days`; what neither keeps goes."""

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TypeVar

T = TypeVar("T")


def beyond_keeping(
    newest_first: Iterable[T], *, keep_last: int | None, keep_days: int | None, now: datetime, taken: Callable[[T], datetime]
) -> list[T]:
    """The items (ordered newest first, as they are to be kept) that neither rule keeps. With
    neither rule set, nothing goes."""
    if keep_last is None and keep_days is None:
        return []
    cutoff = None
    if keep_days is not None:
        try:
            cutoff = now - timedelta(days=keep_days)
        except OverflowError:  # before the calendar begins: the age rule keeps everything
            return []
    return [
        item
        for index, item in enumerate(newest_first)
        if not (keep_last is not None and index < keep_last) and not (cutoff is not None and taken(item) >= cutoff)
    ]
