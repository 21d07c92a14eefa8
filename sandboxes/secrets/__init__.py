"""Secrets and identity: what a sandbox is given to act as someone, one module per concern:

    vault        encryption of every stored value (Fernet, under a key file outside the
                 database): the only place a secret is sealed or decrypted
    credentials  secrets, the git identity and the SSH key: set and changed (audited by name,
                 never by value), and handed to a sandbox at each start (deliver)
    views        the sandbox's and the team's secrets pages (urls import it)

Callers import this package: `from sandboxes import secrets; secrets.deliver(sandbox, cid)`.
The models (Secret, Identity) stay in sandboxes.models, with their app label and tables.
"""

from .credentials import (
    EMAIL_RE,
    GIT_TEXT_RE,
    LABEL_SECRETS,
    MAX_SECRETS,
    MAX_TOTAL_BYTES,
    MAX_VALUE_BYTES,
    RESERVED,
    SECRETS_DIR,
    SSH_KEY_FILE,
    Binding,
    container_environment,
    deliver,
    forget,
    git_identity_set,
    identity_of,
    placeholder,
    proxy_secrets_for,
    secret_delete,
    secret_enable,
    secret_set,
    secrets_for,
    ssh_key_regenerate,
)
from .vault import VaultError, digest, seal, unseal

__all__ = [
    "EMAIL_RE",
    "GIT_TEXT_RE",
    "LABEL_SECRETS",
    "MAX_SECRETS",
    "MAX_TOTAL_BYTES",
    "MAX_VALUE_BYTES",
    "RESERVED",
    "SECRETS_DIR",
    "SSH_KEY_FILE",
    "Binding",
    "VaultError",
    "container_environment",
    "deliver",
    "digest",
    "forget",
    "git_identity_set",
    "identity_of",
    "placeholder",
    "proxy_secrets_for",
    "seal",
    "secret_delete",
    "secret_enable",
    "secret_set",
    "secrets_for",
    "ssh_key_regenerate",
    "unseal",
]
