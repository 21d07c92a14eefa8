"""What changed in a sandbox's folders lately, read on the host (so it works while the sandbox is
stopped).

The walk (fdwalk) goes through file descriptors opened with O_NOFOLLOW, one per level of depth:
it never follows a symbolic link, so a link the agent planted cannot send it outside the
workspace. It keeps only the newest entries (a heap), so a folder of a million files costs time,
not memory. Names that are not UTF-8 are shown with U+FFFD in place of the bad bytes.
"""

import heapq
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from . import fdwalk, policy, workspace
from .models import Sandbox

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
    truncated: bool  # more changed than `limit`, or part of the folders could not be read
    seconds: float


def recent_files(sandbox: Sandbox, *, within_seconds: int, limit: int = 500, max_entries: int = 2_000_000) -> Activity:
    """Files and links modified within the last `within_seconds` in the six folders, newest first."""
    started = time.monotonic()
    cutoff = time.time() - within_seconds
    newest: list[Entry] = []
    count = matched = 0
    incomplete = False
    for folder in workspace.FOLDERS:
        try:
            fd = workspace.open_sandbox_folder(sandbox, folder)
        except policy.HostPathError:
            continue
        walk = fdwalk.Walk(fd, "", limit=max_entries - count)
        for _parent, _name, path, st in walk:
            if stat.S_ISDIR(st.st_mode) or st.st_mtime < cutoff:
                continue
            matched += 1
            item = Entry(st.st_mtime, folder, fdwalk.display_name(path), st.st_size, stat.S_ISLNK(st.st_mode))
            if len(newest) < limit:
                heapq.heappush(newest, item)
            elif item > newest[0]:
                heapq.heapreplace(newest, item)
        count += walk.count
        incomplete = incomplete or walk.truncated or bool(walk.skipped)
    return Activity(sorted(newest, reverse=True), count, matched > limit or incomplete, time.monotonic() - started)
