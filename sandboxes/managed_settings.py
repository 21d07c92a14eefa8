"""A team's Claude Code policy delivered into its sandboxes: the managed settings (teams.agent_policy)
written on this machine as one file per team and content digest under var/managed-settings/,
atomically, root's and 0644, and bind-mounted read-only on /etc/claude-code/managed-settings.json
(policy.MANAGED_SETTINGS_TARGET) by the sandbox's spec. The label `io.ccpanel.managed-settings`
carries the digest, so a changed policy makes the container anew at the next start (as the
secrets' digest does).

The file is written by the process that builds the spec, which is the one that creates the
container: for a host served by an agent that is the agent, on its own machine (where the
sandbox's folders are too). A sandbox of no team, or of a team without managed settings, gets
no file (Claude Code then runs with no managed policy)."""

import os
import tempfile
from pathlib import Path

from django.conf import settings

from teams.agent_policy import canonical, digest, managed_settings_of

from .models import Sandbox

LABEL = "io.ccpanel.managed-settings"


def root() -> Path:
    """The folder the files live in (made on first use; the policy allows no other)."""
    folder = Path(os.path.realpath(settings.VAR_DIR / "managed-settings"))
    folder.mkdir(mode=0o755, exist_ok=True)
    return folder


def file_for(sandbox: Sandbox) -> tuple[str, str]:
    """(host path, digest) of the sandbox's managed-settings file, written if it is not there
    yet; ("", "") when its team has none."""
    wanted = managed_settings_of(sandbox.team if sandbox.team_id else None)
    if not wanted:
        return "", ""
    tag = digest(wanted)
    path = root() / f"team-{sandbox.team_id}-{tag}.json"
    if not path.is_file():
        _write(path, canonical(wanted))
    return str(path), tag


def _write(path: Path, data: bytes) -> None:
    """Atomically: a temporary file beside it, 0644 and root's, then renamed into place."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".writing-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o644)
            if os.geteuid() == 0:
                os.fchown(fh.fileno(), 0, 0)
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
