"""Encryption of the secrets sandboxes receive: Fernet (AES-128-CBC with HMAC-SHA256, from the
`cryptography` library) under a key kept in a file outside the database (var/secrets_key by
default, 0600, made once when first needed). Someone who copies the database alone learns no
secret; whoever can read that file and the database can, so both stay on this machine."""

import base64
import hashlib
import hmac
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

from controlpanel.settings.env import key_file


class VaultError(Exception):
    """A secret could not be decrypted: the key file is not the one it was sealed with."""


def _key_bytes() -> bytes:
    raw = key_file(Path(settings.SECRETS_KEY_FILE).absolute()).encode()  # made once, atomically, 0600
    if len(raw) < 32:
        raise VaultError(
            f"{settings.SECRETS_KEY_FILE} holds a key of {len(raw)} bytes; a key of at least 32 is needed (remove the file to make one)."
        )
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
