"""Walking a folder the sandbox can write, safely: through file descriptors, never following a
symbolic link, with one descriptor open per level of depth (never one per folder found: a folder
of 100,000 subfolders cannot exhaust the process's descriptors).

    for parent_fd, name, path, st in walk(fd, "Projects"):
        ...   # st is the lstat of `path`; open files relative to parent_fd, with O_NOFOLLOW

Folders come before what they hold (depth first, in name order when `sort`); a folder that
cannot be opened is reported in `skipped` (the caller says so) instead of silently left out.
"""

import os
import stat
from collections.abc import Iterator

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def display_name(name: str) -> str:
    """A name as text that can always be shown: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _listing(fd: int, sort: bool) -> list[os.DirEntry]:
    with os.scandir(fd) as found:
        entries = list(found)
    return sorted(entries, key=lambda e: e.name) if sort else entries


class Walk:
    """Iterate it for (parent fd, name, path, lstat); `skipped` lists what could not be read.
    Takes ownership of `top_fd` (closed when the walk ends or is closed)."""

    def __init__(self, top_fd: int, prefix: str, *, sort: bool = False, limit: int | None = None):
        self.top_fd, self.prefix, self.sort, self.limit = top_fd, prefix, sort, limit
        self.skipped: list[str] = []
        self.count = 0
        self.truncated = False
        self._prune = False

    def prune(self) -> None:
        """Do not go into the folder just yielded."""
        self._prune = True

    def __iter__(self) -> Iterator[tuple[int, str, str, os.stat_result]]:
        try:
            listing = _listing(self.top_fd, self.sort)
        except OSError:
            os.close(self.top_fd)
            self.skipped.append(self.prefix)
            return
        stack: list[tuple[int, str, Iterator[os.DirEntry]]] = [(self.top_fd, self.prefix, iter(listing))]
        try:
            while stack:
                fd, base, entries = stack[-1]
                entry = next(entries, None)
                if entry is None:
                    os.close(fd)
                    stack.pop()
                    continue
                self.count += 1
                if self.limit is not None and self.count > self.limit:
                    self.truncated = True
                    return
                path = f"{base}/{entry.name}" if base else entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone meanwhile
                self._prune = False
                yield fd, entry.name, path, st
                if stat.S_ISDIR(st.st_mode) and not self._prune:
                    try:
                        child = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                    except OSError:
                        self.skipped.append(path)  # replaced by a link meanwhile, or unreadable
                        continue
                    try:
                        listing = _listing(child, self.sort)
                    except OSError:
                        os.close(child)
                        self.skipped.append(path)
                        continue
                    stack.append((child, path, iter(listing)))
        finally:
            for fd, _base, _entries in stack:
                os.close(fd)
