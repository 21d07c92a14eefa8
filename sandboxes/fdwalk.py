"""Walking a folder the sandbox can write, safely: through file descriptors, never following a
symbolic link, with one descriptor open per level of depth (never one per folder found: a folder
of 100,000 subfolders cannot exhaust the process's descriptors).

    for parent_fd, name, path, st in walk(fd, "Projects"):
        ...   # st is the lstat of `path`; open files relative to parent_fd, with O_NOFOLLOW

Folders come before what they hold (depth first, in name order when `sort`, for a folder of at
most SORTED_MOST entries: a bigger one is read a block at a time); a folder that
cannot be opened is reported in `skipped` (the caller says so) instead of silently left out.
"""

import os
import stat
from collections.abc import Iterator

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def display_name(name: str) -> str:
    """A name as text that can always be shown: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class Noted(list):
    """A list of what a walk (or an archive) left out that keeps the first MOST and counts the
    rest: one name a FIFO, some 2,900 a MB of quota, each up to 4 KB long, would otherwise take
    a worker's memory (and the manifest it is written into) without bound."""

    MOST = 1000

    def __init__(self, items=()):
        super().__init__()
        self.more = 0
        self.extend(items)

    def append(self, item) -> None:
        if len(self) < self.MOST:
            super().append(item)
        else:
            self.more += 1

    def extend(self, items) -> None:
        for item in items:
            self.append(item)
        self.more += getattr(items, "more", 0)

    def __iadd__(self, items):  # type: ignore[misc]
        self.extend(items)
        return self

    def shown(self) -> list[str]:
        """The names kept, and how many more there were."""
        return [*self, *([f"... and {self.more} more, not listed"] if self.more else [])]


class NotAFolder(Exception):
    """open_dir: what the name stands for cannot be entered as a folder (a file, a link, nothing)."""


def open_dir(name: str, dir_fd: int, *, make: bool = False) -> int:
    """The folder `name` under `dir_fd`, opened without following a link (the caller closes
    it); with `make`, made first (0700) unless something has the name already. NotAFolder when
    what is there cannot be opened as a folder; an error making it (a full disk) is raised as
    it is, for the caller to tell apart."""
    if make:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise NotAFolder(f"{name}: {exc.strerror or exc}") from exc


# A folder is listed whole (and sorted, when asked) only up to this many entries; a bigger one
# is read as the file system gives it, a block at a time. A sandbox can make a folder of tens of
# millions of empty files within its quota (some 2,900 a MB): listed whole, that took every
# walker of it (a backup, the evidence archive, the activity list) gigabytes of memory.
SORTED_MOST = 50_000


class _Listing:
    """The entries of an open folder, in name order when `sort` and it holds at most
    SORTED_MOST; else the first SORTED_MOST then the rest, as read. close() ends it early."""

    def __init__(self, fd: int, sort: bool):
        self._found: Iterator[os.DirEntry] | None = os.scandir(fd)
        first: list[os.DirEntry] = []
        try:
            for entry in self._found:
                first.append(entry)
                if len(first) >= SORTED_MOST:
                    break
            else:
                self.close()
                if sort:
                    first.sort(key=lambda e: e.name)
        except BaseException:
            self.close()
            raise
        self._first = iter(first)

    def __iter__(self) -> "_Listing":
        return self

    def __next__(self) -> os.DirEntry:
        entry = next(self._first, None)
        if entry is not None:
            return entry
        if self._found is None:
            raise StopIteration
        try:
            return next(self._found)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        if self._found is not None:
            self._found.close()  # type: ignore[attr-defined]
            self._found = None


def _listing(fd: int, sort: bool) -> _Listing:
    return _Listing(fd, sort)


class Walk:
    """Iterate it for (parent fd, name, path, lstat); `skipped` lists what could not be read.
    Takes ownership of `top_fd` (closed when the walk ends or is closed)."""

    def __init__(self, top_fd: int, prefix: str, *, sort: bool = False, limit: int | None = None, max_depth: int | None = None):
        self.top_fd, self.prefix, self.sort, self.limit, self.max_depth = top_fd, prefix, sort, limit, max_depth
        self.skipped: list[str] = Noted()
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
        stack: list[tuple[int, str, _Listing]] = [(self.top_fd, self.prefix, listing)]
        try:
            while stack:
                fd, base, entries = stack[-1]
                try:
                    entry = next(entries, None)
                except OSError:  # a big folder that could not be read to its end
                    self.skipped.append(f"{base} (could not be listed to its end)")
                    entry = None
                if entry is None:
                    entries.close()
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
                    if self.max_depth is not None and len(stack) >= self.max_depth:
                        self.skipped.append(f"{path} (deeper than {self.max_depth} folders)")
                        continue
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
                    stack.append((child, path, listing))
        finally:
            for fd, _base, entries in stack:
                entries.close()
                os.close(fd)


def remove_tree(parent_fd: int, name: str, *, budget: int = 64) -> None:
    """Remove the folder `name` under `parent_fd` and everything in it, without recursion (any
    depth the agent made) and without following a link. At most `budget` descriptors are held:
    deeper, a folder's descriptor is closed and opened again through ".." on the way back,
    checked to be the very folder it was (device and inode), so a folder moved meanwhile stops
    the removal instead of redirecting it."""
    top = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    st = os.fstat(top)
    # Each frame: [name in its parent, (device, inode), fd or None, subfolders still to remove]
    frames: list[list] = [[name, (st.st_dev, st.st_ino), top, None]]
    try:
        while frames:
            frame = frames[-1]
            if not frame[3]:
                frame[3] = _clear_files(frame[2])
                if not frame[3]:
                    _leave(frames, parent_fd)
                    continue
            child = frame[3].pop()
            try:
                child_fd = os.open(child, DIR_FLAGS, dir_fd=frame[2])
            except FileNotFoundError:
                continue
            except OSError:
                os.unlink(child, dir_fd=frame[2])  # swapped for a link or a file meanwhile
                continue
            cst = os.fstat(child_fd)
            frames.append([child, (cst.st_dev, cst.st_ino), child_fd, None])
            far = len(frames) - budget - 1
            if far > 0 and frames[far][2] is not None:
                os.close(frames[far][2])
                frames[far][2] = None
    finally:
        for frame in frames:
            if frame[2] is not None:
                os.close(frame[2])


def _clear_files(fd: int) -> list[str]:
    """Unlink everything in the folder but its subfolders; return their names."""
    folders = []
    with os.scandir(fd) as found:
        entries = list(found)
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.name)
                continue
            os.unlink(entry.name, dir_fd=fd)
        except FileNotFoundError:
            continue
        except IsADirectoryError:
            folders.append(entry.name)
    return folders


def _leave(frames: list[list], parent_fd: int) -> None:
    """The innermost folder is empty: remove it from its parent (opened again if needed)."""
    name, _ident, fd, _rest = frames.pop()
    if not frames:
        os.close(fd)
        os.rmdir(name, dir_fd=parent_fd)
        return
    parent = frames[-1]
    if parent[2] is None:
        up = os.open("..", DIR_FLAGS, dir_fd=fd)
        ust = os.fstat(up)
        if (ust.st_dev, ust.st_ino) != parent[1]:
            os.close(up)
            os.close(fd)
            raise OSError(f"a folder was moved while {name} was being removed; the removal stopped")
        parent[2] = up
    os.close(fd)
    os.rmdir(name, dir_fd=parent[2])


def empty_folder(fd: int) -> None:
    """Remove everything inside the open folder `fd`, keeping the folder itself."""
    for sub in _clear_files(fd):
        try:
            remove_tree(fd, sub)
        except FileNotFoundError:
            continue


def remove_path(path: str) -> None:
    """Remove a folder the panel made (a staging folder) and all in it; errors are logged, not
    raised (a clean-up must not hide the error that called it)."""
    import logging

    parent, name = os.path.split(os.path.abspath(path))
    try:
        parent_fd = os.open(parent, DIR_FLAGS)
    except OSError:
        return
    try:
        remove_tree(parent_fd, name)
    except FileNotFoundError:
        pass
    except OSError:
        logging.getLogger(__name__).warning("could not remove %s", path, exc_info=True)
    finally:
        os.close(parent_fd)
