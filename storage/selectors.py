"""Reads about the storage pool: a sandbox's disk use and its checkpoints."""

import time
from dataclasses import dataclass

from django.db.models import QuerySet

from sandboxes.models import Sandbox

from . import pool
from .models import Checkpoint


@dataclass(frozen=True)
class CheckpointRow:
    checkpoint: Checkpoint
    size: int | None  # bytes only it holds (what deleting it frees); None: unknown


SIZES_SECONDS = 5.0  # the most a list spends on its checkpoints' sizes; past it, the rest are unknown
SIZE_TTL = 30.0  # a size is counted again after this long (the card asks every 5 s)
# A walk that did not finish in its time (a checkpoint of millions of files, which the agent
# decides) is not tried again for this long: otherwise every refresh of every open card would
# spend its whole budget walking it again, holding a page process and the disk.
UNKNOWN_TTL = 600.0
_sizes: dict[str, tuple[float, int | None]] = {}  # checkpoint path -> (when counted, bytes or None: too long to count)


def checkpoints_of(sandbox: Sandbox) -> list[CheckpointRow]:
    """The sandbox's checkpoints, newest first, each with its size (pool.exclusive: with simple
    quotas a walk of its files, so the whole list is given SIZES_SECONDS, and a size counted is
    kept for SIZE_TTL)."""
    from .services import checkpoint_path

    rows = Checkpoint.objects.filter(sandbox=sandbox).select_related("sandbox")
    if not pool.active():
        return [CheckpointRow(c, None) for c in rows]
    now = time.monotonic()
    for path in [p for p, (when, size) in _sizes.items() if now - when > (SIZE_TTL if size is not None else UNKNOWN_TTL)]:
        del _sizes[path]
    deadline = now + SIZES_SECONDS
    found = []
    for c in rows:
        path = str(checkpoint_path(c))
        size = _sizes[path][1] if path in _sizes else None
        if path not in _sizes and (left := deadline - time.monotonic()) > 0:
            size = pool.exclusive(path, timeout=left)
            _sizes[path] = (time.monotonic(), size)
        found.append(CheckpointRow(c, size))
    return found


def find_checkpoint(sandbox: Sandbox, which: str) -> Checkpoint | None:
    """A checkpoint by its snapshot name, or by its number as `sandbox checkpoints` lists them."""
    rows: QuerySet[Checkpoint] = Checkpoint.objects.filter(sandbox=sandbox)
    if which.isdigit() and 0 < int(which) <= rows.count():
        return rows[int(which) - 1]
    return rows.filter(snapshot=which).first()


def disk_usage(sandbox: Sandbox) -> pool.Usage | None:
    """What the sandbox uses of its quota (folders, home and checkpoints), or None (no pool)."""
    if not sandbox.in_pool:
        return None
    return pool.usage(sandbox.disk_group)
