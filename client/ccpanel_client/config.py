"""Where the panel is and which token to show it, first found wins:

1. `--url` / `--token` on the command line;
2. the environment: CCPANEL_URL, CCPANEL_TOKEN;
3. the config file: CCPANEL_CONFIG if set, else $XDG_CONFIG_HOME/ccpanel/config (~/.config/ccpanel/config),
   lines of `url = …` and `token = …` (# starts a comment).

The file holds a secret: it is read only if it is the user's own and neither its group nor others
may read or write it (chmod 600), as ssh treats a private key.
"""

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .api import ClientError

KEYS = ("url", "token")


@dataclass
class Settings:
    url: str
    token: str


def config_path() -> Path:
    if os.environ.get("CCPANEL_CONFIG"):
        return Path(os.environ["CCPANEL_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ccpanel" / "config"


def read_file(path: Path) -> dict[str, str]:
    """The file's settings ({} when there is no file); ClientError for one others may read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ClientError(f"Cannot read the config file {path}: {exc.strerror}") from None
    with os.fdopen(fd, encoding="utf-8") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ClientError(f"The config file {path} is not a regular file.")
        if info.st_uid != os.getuid():
            raise ClientError(f"Refusing the config file {path}: it is not yours (it holds your token).")
        if info.st_mode & 0o077:
            raise ClientError(
                f"Refusing the config file {path}: its mode is {stat.S_IMODE(info.st_mode):04o}, so others may read "
                f"your token. Run: chmod 600 {path}"
            )
        text = f.read(64 * 1024)
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if not sep or key not in KEYS:
            raise ClientError(f"{path}, line {number}: expected `url = …` or `token = …`.")
        values[key] = value.strip().strip('"').strip("'")
    return values


def resolve(url: str | None, token: str | None) -> Settings:
    """The settings this run uses; ClientError saying what is missing."""
    url = url or os.environ.get("CCPANEL_URL") or None
    token = token or os.environ.get("CCPANEL_TOKEN") or None
    if not (url and token):
        found = read_file(config_path())
        url = url or found.get("url")
        token = token or found.get("token")
    if not url:
        raise ClientError(f"No panel URL: set CCPANEL_URL, pass --url, or write `url = …` in {config_path()}.")
    if not token:
        raise ClientError(f"No API token: set CCPANEL_TOKEN, pass --token, or write `token = …` in {config_path()} (mode 600).")
    if not url.startswith(("http://", "https://")):
        raise ClientError(f"The panel URL must start with http:// or https:// (got {url!r}).")
    return Settings(url=url, token=token)
