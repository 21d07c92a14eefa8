"""What changed in a sandbox's folders lately, read on the host (so it works while the sandbox is
stopped).

The walk goes folder by folder through file descriptors opened with O_NOFOLLOW: it never
follows a symbolic link, so a link the agent planted cannot send it outside the workspace. It
keeps only the newest entries (a heap), so a folder of a million files costs time, not memory.
"""

import heapq
import os
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from . import policy, workspace
from .models import Sandbox

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WINDOWS = {"1h": 3600, "1d": 86400, "7d": 7 * 86400}


@dataclass(frozen=True, order=True)
class Entry:
    mtime: float
    folder: str
    path: str  # inside the folder
    size: int
    is_link: bool

    @property
    def modified(self) -> datetime:
        return datetime.fromtimestamp(self.mtime, tz=UTC)


@dataclass
class Activity:
    entries: list[Entry]  # newest first
    scanned: int
    truncated: bool  # more changed than `limit`
    seconds: float


def recent_files(sandbox: Sandbox, *, within_seconds: int, limit: int = 500, max_entries: int = 2_000_000) -> Activity:
    """Files and links modified within the last `within_seconds` in the six folders, newest first."""
    started = time.monotonic()
    cutoff = time.time() - within_seconds
    newest: list[Entry] = []
    count = matched = 0
    for folder in workspace.FOLDERS:
        try:
            fd = policy.open_dir_nofollow(str(sandbox.workspace_path / folder), flags=os.O_RDONLY)
        except policy.HostPathError:
            continue
        stack: list[tuple[int, str]] = [(fd, "")]
        while stack:
            dir_fd, prefix = stack.pop()
            try:
                with os.scandir(dir_fd) as entries:
                    for entry in entries:
                        count += 1
                        if count > max_entries:
                            break
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        rel = f"{prefix}{entry.name}"
                        if stat.S_ISDIR(st.st_mode):
                            try:
                                stack.append((os.open(entry.name, _DIR, dir_fd=dir_fd), rel + "/"))
                            except OSError:
                                pass
                            continue
                        if st.st_mtime >= cutoff:
                            matched += 1
                            item = Entry(st.st_mtime, folder, rel, st.st_size, stat.S_ISLNK(st.st_mode))
                            if len(newest) < limit:
                                heapq.heappush(newest, item)
                            elif item > newest[0]:
                                heapq.heapreplace(newest, item)
            except OSError:
                pass
            finally:
                os.close(dir_fd)
    return Activity(sorted(newest, reverse=True), count, matched > limit, time.monotonic() - started)
