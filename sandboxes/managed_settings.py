"""A team's Claude Code policy delivered into its sandboxes: the managed settings (teams.agent_policy)
written on this machine as one file per content digest under var/managed-settings/,
atomically, root's and 0644, and bind-mounted read-only on /etc/claude-code/managed-settings.json
(policy.MANAGED_SETTINGS_TARGET) by the sandbox's spec. The label `io.ccpanel.managed-settings`
carries the digest, so a changed policy makes the container anew at the next start (as the
secrets' digest does).

The file is written by the process that builds the spec, which is the one that creates the
container: for a host served by an agent that is the agent, on its own machine (where the
sandbox's folders are too).

Every sandbox gets a file: the team's settings (if any) with the panel's telemetry environment
(agents.services.telemetry_environment) merged into their `env`, the panel's values winning.
Claude Code applies the managed `env` over its process's environment and every other settings
file, so the agent cannot turn the export of its own activity off (`CLAUDE_CODE_ENABLE_TELEMETRY=0
claude`, a settings file of its own) or point it elsewhere."""

import hashlib
import os
import tempfile
from pathlib import Path

from django.conf import settings

from agents.services import telemetry_environment
from teams.agent_policy import canonical, digest, managed_settings_of

from .models import Sandbox

LABEL = "io.ccpanel.managed-settings"


def root() -> Path:
    """The folder the files live in (made on first use; the policy allows no other)."""
    folder = Path(os.path.realpath(settings.VAR_DIR / "managed-settings"))
    folder.mkdir(mode=0o755, exist_ok=True)
    return folder


def delivered(sandbox: Sandbox) -> dict:
    """The managed settings the sandbox gets: its team's, with the telemetry environment in `env`."""
    wanted = managed_settings_of(sandbox.team if sandbox.team_id else None)
    env = wanted.get("env")
    return {**wanted, "env": {**(env if isinstance(env, dict) else {}), **telemetry_environment(sandbox)}}


def file_for(sandbox: Sandbox) -> tuple[str, str]:
    """(host path, digest) of the sandbox's managed-settings file, written if it is not there
    yet or not what it should hold."""
    wanted = delivered(sandbox)
    tag, data = digest(wanted), canonical(wanted)
    # Named by its whole content's digest: sandboxes given the same settings (a warm slot and
    # the sandbox that takes it, teams with no policy of their own) share one file and one mount.
    path = root() / f"settings-{hashlib.sha256(data).hexdigest()}.json"
    try:
        same = path.read_bytes() == data
    except OSError:
        same = False
    if not same:
        _write(path, data)
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
