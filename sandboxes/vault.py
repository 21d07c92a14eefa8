"""Encryption of the secrets sandboxes receive: Fernet (AES-128-CBC with HMAC-SHA256, from the
`cryptography` library) under a key kept in a file outside the database (var/secrets_key by
default, 0600, made once when first needed). Someone who copies the database alone learns no
secret; whoever can read that file and the database can, so both stay on this machine."""

import base64
import hashlib
import hmac
import os
import secrets as pysecrets
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class VaultError(Exception):
    """A secret could not be decrypted: the key file is not the one it was sealed with."""


def _key_bytes() -> bytes:
    path = Path(settings.SECRETS_KEY_FILE)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{pysecrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, pysecrets.token_urlsafe(48).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process made it first: then its key is used
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    raw = path.read_bytes().strip()
    if len(raw) < 32:
        raise VaultError(f"{path} holds a key of {len(raw)} bytes; a key of at least 32 is needed (remove the file to make one).")
    return raw


@lru_cache(maxsize=4)
def _fernet(raw: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"ccpanel-secrets\0" + raw).digest()))


def seal(value: str) -> str:
    return _fernet(_key_bytes()).encrypt(value.encode("utf-8")).decode("ascii")


def unseal(token: str) -> str:
    try:
        return _fernet(_key_bytes()).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError) as exc:
        raise VaultError(f"a secret could not be decrypted with {settings.SECRETS_KEY_FILE} (was the key file replaced?)") from exc


def digest(items: list[tuple[str, str]]) -> str:
    """A keyed fingerprint of what a sandbox was given, for its container's label: a change of
    any secret changes it (and the container is made again), and it tells nothing of the values."""
    mac = hmac.new(hashlib.sha256(b"ccpanel-digest\0" + _key_bytes()).digest(), digestmod=hashlib.sha256)
    for name, value in sorted(items):
        mac.update(name.encode() + b"\0" + value.encode() + b"\0")
    return mac.hexdigest()[:32]
