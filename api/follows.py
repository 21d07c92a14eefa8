"""How many followed logs may be open at once: a follow holds a page process (a gunicorn sync
worker) for minutes, so without a cap one viewer opening a handful would take every worker and
the panel's pages with them.

A follow takes a slot: one of API_LOG_FOLLOWS_PER_USER lock files of its user and one of
API_LOG_FOLLOWS_TOTAL shared ones, in API_LOG_FOLLOW_DIR. Slots are `flock` locks, taken without
waiting: they work across the page processes and the threads of one, and the kernel lets go of
them when the process that held them dies, so a crashed worker leaks none.
"""

import contextlib
import fcntl
import os
from pathlib import Path

from django.conf import settings


class TooManyFollows(Exception):
    """No slot is free; the message says which cap was reached."""


class Slot:
    """The locks one follow holds; release() (idempotent) gives them back."""

    def __init__(self, fds: list[int]):
        self._fds = fds

    def release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the only descriptor of the open file drops its flock

    def __del__(self) -> None:  # a response dropped before it was read still frees its slot
        self.release()


def _take_one(directory: Path, prefix: str, count: int) -> int | None:
    for n in range(count):
        fd = os.open(directory / f"{prefix}-{n}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return fd
    return None


def follow_acquire(*, user_id: int) -> Slot:
    """A slot for one followed log of `user_id`, or TooManyFollows."""
    directory = Path(settings.API_LOG_FOLLOW_DIR)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    mine = _take_one(directory, f"user-{user_id}", settings.API_LOG_FOLLOWS_PER_USER)
    if mine is None:
        raise TooManyFollows(f"You already follow {settings.API_LOG_FOLLOWS_PER_USER} logs at once: end one (or read without follow=1).")
    shared = _take_one(directory, "all", settings.API_LOG_FOLLOWS_TOTAL)
    if shared is None:
        os.close(mine)
        raise TooManyFollows(f"The panel already serves {settings.API_LOG_FOLLOWS_TOTAL} followed logs: try again in a few minutes.")
    return Slot([mine, shared])
