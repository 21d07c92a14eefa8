"""What this machine has: the capacity a host made here starts with (an admin may change it).

Read at the moment a host row is made, never cached: the figures are a starting point, not a
measurement kept up to date.
"""

import os
import shutil
from decimal import Decimal
from pathlib import Path

from django.conf import settings


def cpus() -> Decimal:
    """The CPUs this process may use (its affinity, else the cores)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return Decimal(count)


def memory_mb() -> int:
    """The machine's memory (MemTotal), in MB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)


def disk_mb() -> int:
    """The size of the file system sandboxes' data lives on: the workspace root's (the storage
    pool when it is mounted there), else that of its nearest existing parent."""
    folder = Path(settings.WORKSPACE_ROOT)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).total // (1 << 20)
    except OSError:
        return 0
