"""The sandbox's folders on the host, under WORKSPACE_ROOT/<name>/."""

import os
import shutil
from pathlib import Path

from django.conf import settings

# folder name -> mounted read-only inside the container
FOLDERS: dict[str, bool] = {
    "Projects": False,
    "Documentation": False,
    "Research": False,
    "shared": False,
    "imports": True,
    "exports": False,
}


class WorkspaceError(Exception):
    pass


def _safe_base(name: str) -> Path:
    root = Path(settings.WORKSPACE_ROOT)
    base = root / name
    if base.is_symlink() or base.resolve().parent != root.resolve():
        raise WorkspaceError(f"{base} is not a plain folder inside {root}; refusing to use it.")
    return base


def workspace_prepare(name: str) -> Path:
    """Create the folders (mode 755, owned by the sandbox uid when we can). Keeps existing files."""
    root = Path(settings.WORKSPACE_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    base = _safe_base(name)
    for path in [base, *(base / f for f in FOLDERS)]:
        if path.is_symlink():
            raise WorkspaceError(f"{path} is a symbolic link; refusing to mount it.")
        path.mkdir(exist_ok=True)
        os.chmod(path, 0o755)
        if os.geteuid() == 0:
            os.chown(path, settings.SANDBOX_UID, settings.SANDBOX_UID, follow_symlinks=False)
    return base


def workspace_remove(name: str) -> None:
    """Delete the sandbox's folder and everything in it (destroy only)."""
    base = _safe_base(name)
    if base.exists():
        shutil.rmtree(base)
