import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def ram_path(tmp_path) -> Iterator[Path]:
    """A folder in memory (/dev/shm) where there is one, else tmp_path: for the tests that write
    ten thousand small files, which on a virtual machine's disk spend seconds in the file system
    rather than in the code under test. Removed at the end."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and shm.stat().st_mode & 0o002):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="ccpanel-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
