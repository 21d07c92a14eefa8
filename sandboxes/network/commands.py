"""The one place that runs `ip`, `iptables`, `iptables-save`, `iptables-restore` and `ipset`: plain
strings in and out, the project's own EgressError when they fail; and the lock that orders the
changes several processes make with them."""

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

TIMEOUT = 20


class EgressError(Exception):
    """The rules could not be read or applied; the message says why."""


def run_ip(*args: str, stdin: str | None = None) -> str:
    try:
        return subprocess.run(["ip", "-4", "-o", *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EgressError(f"ip failed: {exc}") from exc


def run_iptables(*args: str, stdin: str | None = None, tool: str = "iptables") -> str:
    binary = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if binary is None:
        raise EgressError(f"{tool} is not installed; the egress rules cannot be applied (apt-get install iptables).")
    try:
        wait = ("-w", "10") if tool in ("iptables", "iptables-restore") else ()
        done = subprocess.run([binary, *wait, *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EgressError(f"{tool} failed: {exc}") from exc
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        reason = message[-1] if message else f"exit code {done.returncode}"
        if "Permission denied" in reason or "you must be root" in reason:
            reason += " (the panel must run as root to enforce egress rules, or set SANDBOX_EGRESS_RULES=false)"
        raise EgressError(f"{tool} {' '.join(args[:2])}: {reason}")
    return done.stdout


def run_ipset(*args: str, stdin: str | None = None) -> str:
    return run_iptables(*args, stdin=stdin, tool="ipset")


@contextmanager
def host_lock(name: str) -> Iterator[None]:
    """Held, across the panel's processes, while one thing of the host's (`name`: the rules of
    a bridge, the grants of one) is read and changed: var/<name>.lock, flock'ed."""
    fd = os.open(os.path.join(settings.VAR_DIR, f"{name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
