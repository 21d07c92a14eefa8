"""The storage pool that holds the sandboxes' data (storage.pool): a btrfs file system mounted at
WORKSPACE_ROOT, one subvolume per sandbox with a disk quota, snapshots for checkpoints and
consistent backups."""

import os
from pathlib import Path

from .env import env_bool, env_int, env_str
from .sandboxes import WORKSPACE_ROOT

# "loop" (the default): a file beside WORKSPACE_ROOT, allocated up front, formatted as btrfs and
# mounted at WORKSPACE_ROOT (nosuid, nodev) by `make run`. "none": plain folders, no disk quota.
# A path: an existing btrfs file system an admin names; the panel keeps its sandboxes in a
# subvolume of it, mounted (bind, nosuid, nodev) at WORKSPACE_ROOT.
STORAGE_POOL = env_str("STORAGE_POOL", "loop")
# The loop file (never inside the checkout: removing the checkout must not remove sandbox data).
STORAGE_POOL_FILE = Path(os.path.expanduser(env_str("STORAGE_POOL_FILE", f"{WORKSPACE_ROOT}.btrfs"))).resolve()
# Its size when it is first made; 0: half of the free space, at least 2 GiB, leaving 5 GiB free.
STORAGE_POOL_SIZE_MB = env_int("STORAGE_POOL_SIZE_MB", 0, minimum=0)
# A sandbox's disk quota (its folders, its home and its checkpoints) when none is given.
SANDBOX_DEFAULT_DISK_MB = env_int("SANDBOX_DEFAULT_DISK_MB", 10 * 1024, minimum=64)
# Whether the sandboxes' quotas may add up to more than the pool holds. Off: a create or a
# quota raise that would overcommit the pool is refused, so that no sandbox within its quota can
# fill the pool for the others.
STORAGE_OVERCOMMIT = env_bool("STORAGE_OVERCOMMIT", False)
SANDBOX_MIN_DISK_MB = 64
SANDBOX_MAX_DISK_MB = env_int("SANDBOX_MAX_DISK_MB", 4 * 1024 * 1024, minimum=SANDBOX_MIN_DISK_MB)
# Checkpoints a sandbox keeps: when one more is taken, the oldest automatic one (the panel's own, as
# a rollback takes of the present) goes first; with none, the oldest of all, labelled or not.
SANDBOX_KEEP_CHECKPOINTS = env_int("SANDBOX_KEEP_CHECKPOINTS", 20, minimum=1)
# The checklist warns when a sandbox has used this share of its quota.
SANDBOX_DISK_WARN_PERCENT = env_int("SANDBOX_DISK_WARN_PERCENT", 90, minimum=1)
