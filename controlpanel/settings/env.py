"""Reading the environment, strictly: a value that cannot be read stops start-up with the
variable's name, instead of quietly becoming a default. Also where the panel keeps its own
files (var/) and the keys it generates there."""

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("PANEL_VAR_DIR", BASE_DIR / "var")).resolve()
T = TypeVar("T")

# Everything the panel keeps for itself (keys, the database, Redis's socket, logs) is for root
# (or whoever runs the panel) alone: var/ is 0700, the keys and the SQLite files 0600.
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
VAR_DIR.chmod(0o700)


def _env(name: str, parse: Callable[[str], T], what: str) -> tuple[str, T] | None:
    """The variable as it was given and as `parse` reads it, or None when it is unset or
    blank; `parse` raising ValueError stops start-up: "NAME='…' is not <what>."."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return raw, parse(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not {what}.") from None


def env_str(name: str, default: str) -> str:
    found = _env(name, str.strip, "text")
    return default if found is None else found[1]


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


RATE_PERIODS = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_rate(raw: str) -> tuple[int, int] | None:
    """(calls, seconds) of a rate such as "600/min"; None for "off". ValueError otherwise."""
    if raw.strip().lower() == "off":
        return None
    calls, _, period = raw.strip().lower().partition("/")
    if not (calls.strip().isascii() and calls.strip().isdigit()) or int(calls) < 1 or period.strip() not in RATE_PERIODS:
        raise ValueError(raw)
    return int(calls), RATE_PERIODS[period.strip()]


def env_rate(name: str, default: str) -> str:
    """A rate ("<calls>/<s|min|hour|day>", or "off"), checked at start-up."""
    found = _env(name, lambda raw: (parse_rate(raw), raw.strip())[1], "a rate such as 600/min (calls/s, min, hour or day), or off")
    return default if found is None else found[1]


def env_bool(name: str, default: bool = False) -> bool:
    found = _env(name, _boolean, "a boolean (use true or false)")
    return default if found is None else found[1]


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    found = _env(name, int, "a whole number")
    if found is None:
        return default
    raw, value = found
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum}.")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    found = _env(name, float, "a number")
    if found is None:
        return default
    raw, value = found
    if value != value or value in (float("inf"), float("-inf")) or (minimum is not None and value < minimum):
        raise ImproperlyConfigured(f"{name}={raw!r} must be a finite number{f' of at least {minimum}' if minimum is not None else ''}.")
    return value


def key_file(name: str | Path, *, nbytes: int = 48) -> str:
    """A per-installation secret kept in var/ (or at the absolute path given), created once,
    atomically and 0600.

    Written to a private temporary file first (O_EXCL) and then hard-linked into place: link()
    fails if the name exists, so two processes starting at once agree on one key and neither
    ever reads a half-written file."""
    path = Path(name) if Path(name).is_absolute() else VAR_DIR / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, secrets.token_urlsafe(nbytes).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race; use its key
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path.read_text().strip()
