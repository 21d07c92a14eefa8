"""Looking for credentials left in the folders a sandbox shares (`shared/`, `exports/`): private
keys, cloud keys, tokens, `.env` files. Read through file descriptors without following links
(sandboxes.fdwalk), with caps on files and bytes, so a folder the sandbox filled with a million
files or one enormous file costs a bounded amount of time. Findings name the file and the kind
of credential, never the matched text."""

import os
import re
import stat
from dataclasses import dataclass, field

from . import fdwalk

MAX_FILES = 20_000
MAX_BYTES_PER_FILE = 256 * 1024
MAX_BYTES = 32 * 1024 * 1024
# Deeper folders are left out (and said so): the walk holds a descriptor per level, and the
# folders are the sandbox's to make as deep as it likes.
MAX_DEPTH = 64

# Names that hold credentials whatever their content.
NAMES = {
    ".env": "an environment file",
    ".netrc": "a .netrc with logins",
    ".git-credentials": "git credentials",
    ".pgpass": "PostgreSQL passwords",
    "id_rsa": "an SSH private key",
    "id_dsa": "an SSH private key",
    "id_ecdsa": "an SSH private key",
    "id_ed25519": "an SSH private key",
    "credentials": "a cloud credentials file",
}
SUFFIXES = {
    ".pem": "a PEM file",
    ".key": "a key file",
    ".p12": "a PKCS#12 key store",
    ".pfx": "a PKCS#12 key store",
    ".env": "an environment file",
}
# Content patterns: (reason, regex on bytes).
PATTERNS = [
    ("a private key", re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("an AWS access key", re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("an Anthropic API key", re.compile(rb"\bsk-ant-[A-Za-z0-9_-]{20,}")),
    ("a GitHub token", re.compile(rb"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})")),
    ("a Slack token", re.compile(rb"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("a Google service-account key", re.compile(rb'"type"\s*:\s*"service_account"')),
    ("a GitLab token", re.compile(rb"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("an npm token", re.compile(rb"\bnpm_[A-Za-z0-9]{36}\b")),
]


@dataclass
class Scan:
    findings: list[tuple[str, str]] = field(default_factory=list)  # (path, what)
    files: int = 0
    bytes_read: int = 0
    truncated: bool = False  # a cap was reached: what was not read is not vouched for
    skipped: list[str] = field(default_factory=list)


def _by_name(name: str) -> str | None:
    lowered = name.lower()
    if lowered in NAMES:
        return NAMES[lowered]
    if lowered.startswith(".env."):
        return "an environment file"
    _, dot, suffix = lowered.rpartition(".")
    return SUFFIXES.get(f".{suffix}") if dot else None


def scan_folder(dir_fd: int, prefix: str, result: Scan | None = None) -> Scan:
    """Scan the folder open at `dir_fd` (the descriptor is taken over), naming paths under
    `prefix`."""
    result = result or Scan()
    walk = fdwalk.Walk(dir_fd, prefix, limit=MAX_FILES - result.files, max_depth=MAX_DEPTH)
    for parent_fd, name, path, st in walk:
        if not stat.S_ISREG(st.st_mode):
            continue
        result.files += 1
        shown = fdwalk.display_name(path)
        if what := _by_name(fdwalk.display_name(name)):
            result.findings.append((shown, what))
            continue
        if result.bytes_read >= MAX_BYTES:
            result.truncated = True
            continue
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent_fd)
        except OSError:
            result.skipped.append(shown)
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue  # replaced by a pipe or a device meanwhile
            data = os.read(fd, min(MAX_BYTES_PER_FILE, MAX_BYTES - result.bytes_read))
        except OSError:
            result.skipped.append(shown)
            continue
        finally:
            os.close(fd)
        result.bytes_read += len(data)
        if st.st_size > MAX_BYTES_PER_FILE:
            result.truncated = True
        for what, pattern in PATTERNS:
            if pattern.search(data):
                result.findings.append((shown, what))
                break
    result.truncated = result.truncated or walk.truncated or any("deeper than" in s for s in walk.skipped)
    result.skipped += walk.skipped
    return result
