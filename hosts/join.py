"""Join tokens: how a machine becomes one of the panel's hosts, served by its own agent.

A superuser makes a token on the Hosts page (`token_create`): a random secret, of which only the
SHA-256 is kept, for the host name and labels given, valid HOST_JOIN_TOKEN_HOURS. The text shown
once carries what the new machine's agent needs to reach the panel: `ccpj1.` + base64url(JSON of
the host's name, the panel's instance, the Redis and database URLs the agents use
(PANEL_AGENT_REDIS_URL, PANEL_AGENT_DATABASE_URL) and the secret). On the new machine
`manage.py host join <token>` connects to that database and `host_join` checks the secret
against the hash, in one transaction with the token's row locked, so that two joins with one
token make one host; it writes the agent's environment file (`write_env_file`) that
`manage.py host agent` starts the host's workers, events watcher and heartbeat with.

Refused on SQLite: a host on another machine shares the panel's database, which needs PostgreSQL.
Revoking a token (`token_revoke`) disables the host it made; that agent's heartbeat then stops it.
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from audit.services import audit_record
from teams.permissions import actor_name, actor_user

from .models import Host, JoinToken
from .services import HostError, _audit, clean_labels, docker_url_errors, name_errors, panel_url_errors, require_superuser

PREFIX = "ccpj1."
SQLITE_REFUSED = (
    "This panel's database is SQLite, which only this machine can use: a host on another machine shares the panel's "
    "database, so it needs PostgreSQL. Move the panel first: stop it, create an empty PostgreSQL database, run "
    '`.venv/bin/python manage.py database move --to postgres://USER@ADDRESS:5432/DATABASE` (README, "Moving to '
    'PostgreSQL"), and start it again with the DATABASE_URL that prints.'
)


class JoinError(Exception):
    """A join refused; the message says why and what to do. Nothing was changed."""


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def agent_url_problems(redis_url: str, database_url: str) -> list[str]:
    """What is wrong with the URLs a token would hand an agent (empty: nothing)."""
    problems = []
    redis = urlsplit(redis_url) if redis_url else None
    if redis is None:
        problems.append("Set PANEL_AGENT_REDIS_URL: the Redis URL a host's agent reaches the panel's task queue by.")
    elif redis.scheme != "rediss" or not redis.password:
        problems.append(
            "PANEL_AGENT_REDIS_URL must be rediss://:PASSWORD@ADDRESS:PORT/N (TLS and a password): an agent on another "
            "machine reaches Redis over the network, where without TLS anyone on the way reads and alters the panel's "
            "tasks, and without a password anyone who reaches the port queues actions on every sandbox."
        )
    database = urlsplit(database_url) if database_url else None
    if database is None:
        problems.append("Set PANEL_AGENT_DATABASE_URL: the panel's PostgreSQL as a host's agent reaches it (postgres://…).")
    elif database.scheme not in ("postgres", "postgresql", "pgsql"):
        problems.append("PANEL_AGENT_DATABASE_URL must be a postgres://… URL: agents on other machines share the panel's PostgreSQL.")
    return problems


def encode(payload: dict) -> str:
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str) -> dict:
    """The token's contents; JoinError for anything that is not a whole token of this kind."""
    text = (text or "").strip()
    not_one = JoinError(f"This is not a join token: one comes from the Hosts page, starts with {PREFIX} and is one line.")
    if not text.startswith(PREFIX):
        raise not_one
    body = text[len(PREFIX) :]
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise not_one from exc
    keys = ("host", "instance", "redis", "database", "secret", "audit_key", "secrets_key")
    if not isinstance(payload, dict) or not all(isinstance(payload.get(k), str) and payload[k] for k in keys):
        raise not_one
    return payload


def token_create(*, actor, name: str, labels: Sequence[str] | str = (), source_ip: str | None = None) -> tuple[JoinToken, str]:
    """A join token for a new host `name`: its row (the secret's hash) and the text to show once.
    HostError, changing nothing, on SQLite, while the agents' URLs are unset or unsafe, for a bad
    or taken name, or while another token for the name waits."""
    require_superuser(actor)
    if connection.vendor == "sqlite":
        raise HostError({"": [SQLITE_REFUSED]})
    if problems := agent_url_problems(settings.PANEL_AGENT_REDIS_URL, settings.PANEL_AGENT_DATABASE_URL):
        raise HostError({"": problems})
    name = (name or "").strip()
    errors: dict[str, list[str]] = {}
    if problems := name_errors(name):
        errors["name"] = problems
    elif name == settings.PANEL_HOST:
        errors["name"] = [
            f"{name!r} is this machine's own host (PANEL_HOST): an agent under that name would have its queues read by this "
            "machine's workers too, which take it for this machine's engine."
        ]
    elif Host.objects.filter(name=name).exists():
        errors["name"] = [f"A host named {name!r} exists."]
    elif JoinToken.objects.filter(name=name, used_at=None, revoked_at=None, expires_at__gt=timezone.now()).exists():
        errors["name"] = [f"A join token for {name!r} is waiting: revoke it first."]
    try:
        labels = clean_labels(labels)
    except HostError as exc:
        errors.update(exc.errors)
    if errors:
        raise HostError(errors)
    secret = secrets.token_urlsafe(32)
    expires = timezone.now() + timedelta(hours=settings.HOST_JOIN_TOKEN_HOURS)
    with transaction.atomic():
        token = JoinToken.objects.create(
            name=name,
            labels=labels,
            secret_sha256=digest(secret),
            created_by=actor_user(actor),
            created_by_name=actor_name(actor),
            expires_at=expires,
        )
        _audit(actor, "host.token_created", name, {"token": token.pk, "labels": labels, "expires_at": expires.isoformat()}, source_ip)
    payload = {
        "host": name,
        "instance": settings.PANEL_INSTANCE,
        "redis": settings.PANEL_AGENT_REDIS_URL,
        "database": settings.PANEL_AGENT_DATABASE_URL,
        "secret": secret,
        **panel_keys(),
    }
    return token, encode(payload)


def panel_keys() -> dict[str, str]:
    """The keys an agent's work needs as the panel's own processes do: the audit trail's HMAC key
    (its events chain with the panel's) and the secrets key (a sandbox's secrets are handed over
    at its start, which the agent's worker does)."""
    from audit.services import audit_key
    from controlpanel.settings.env import key_file

    return {"audit_key": audit_key().decode(), "secrets_key": key_file(Path(settings.SECRETS_KEY_FILE).absolute())}


def key_paths() -> dict[str, Path]:
    """Where this machine's processes read each key (as audit.services and the vault do)."""
    audit = Path(settings.VAR_DIR) / Path(settings.AUDIT_KEY_FILE).name
    return {"audit_key": audit, "secrets_key": Path(settings.SECRETS_KEY_FILE).absolute()}


def install_keys(payload: dict) -> list[Path]:
    """Put the panel's keys where this machine's processes read them (0600); returns the files
    made (for the caller to remove should the join be refused). JoinError, making none, where a
    different key is there already: this machine's processes would write an audit trail and
    read secrets the panel cannot."""
    paths = key_paths()
    for key, path in paths.items():
        if path.exists() and path.read_text().strip() != payload[key]:
            raise JoinError(f"{path} holds another key than the panel's: move it away (this machine's own panel?) and join again.")
    made = []
    for key, path in paths.items():
        if not path.exists():
            write_env_file(path, {}, text=payload[key])
            made.append(path)
    return made


def token_revoke(*, actor, token: JoinToken, source_ip: str | None = None) -> JoinToken:
    """Revoke a token: unused, it joins nothing any more; used, the host it made is disabled (its
    agent's heartbeat sees that and stops the agent). Audited once; a second revoke changes nothing."""
    require_superuser(actor)
    with transaction.atomic():
        current = JoinToken.objects.select_for_update().get(pk=token.pk)
        if current.revoked_at is None:
            JoinToken.objects.filter(pk=current.pk).update(revoked_at=timezone.now())
            disabled = bool(current.host_id and Host.objects.filter(pk=current.host_id, enabled=True).update(enabled=False))
            _audit(actor, "host.token_revoked", current.name, {"token": current.pk, "host_disabled": disabled}, source_ip)
    token.refresh_from_db()
    return token


def host_join(*, payload: dict, docker_url: str = "", panel_url: str = "") -> Host:
    """Make the host a token names, served by an agent (the caller is on its machine, connected
    to the panel's database). The secret is checked against the stored hashes of the tokens for
    that name, with their rows locked until the end: a second join with the same token waits,
    then finds it used. JoinError, changing nothing, for a token that is unknown, revoked, used
    or expired, a name taken, or a URL that is not one (hosts.services)."""
    if problems := docker_url_errors(docker_url) + panel_url_errors(panel_url):
        raise JoinError(" ".join(problems))
    if connection.vendor == "sqlite":
        raise JoinError(SQLITE_REFUSED)
    name, wanted = payload["host"], digest(payload["secret"])
    with transaction.atomic():
        candidates = list(JoinToken.objects.select_for_update().filter(name=name))
        token = next((t for t in candidates if hmac.compare_digest(t.secret_sha256, wanted)), None)
        now = timezone.now()
        if token is None:
            raise JoinError(f"The panel knows no such join token for {name!r} (a wrong secret?): make one on the Hosts page.")
        if token.revoked_at:
            raise JoinError(f"This join token was revoked at {token.revoked_at:%Y-%m-%d %H:%M} UTC: make a new one on the Hosts page.")
        if token.used_at:
            raise JoinError(f"This join token was used at {token.used_at:%Y-%m-%d %H:%M} UTC already: a token joins one machine, once.")
        if token.expires_at <= now:
            raise JoinError(f"This join token expired at {token.expires_at:%Y-%m-%d %H:%M} UTC: make a new one on the Hosts page.")
        if Host.objects.filter(name=name).exists():
            raise JoinError(f"A host named {name!r} exists already: make a token for another name.")
        try:
            with transaction.atomic():
                host = Host.objects.create(name=name, docker_url=docker_url, panel_url=panel_url, agent=True, labels=token.labels)
        except IntegrityError as exc:
            raise JoinError(f"A host named {name!r} exists already: make a token for another name.") from exc
        JoinToken.objects.filter(pk=token.pk).update(used_at=now, host=host)
        details = {
            "token": token.pk,
            "docker_url": docker_url,
            "panel_url": panel_url,
            "cpus": str(host.cpus),
            "memory_mb": host.memory_mb,
            "disk_mb": host.disk_mb,
        }
        audit_record(actor=None, actor_name=f"host {name}", action="host.joined", target=f"host {name}", details=details)
    return host


def agent_environment(payload: dict) -> dict[str, str]:
    """The agent's settings, from its token: which host it is, and the panel's Redis and database."""
    return {
        "PANEL_HOST": payload["host"],
        "PANEL_HOST_AGENT": "true",
        "PANEL_INSTANCE": payload["instance"],
        "DATABASE_URL": payload["database"],
        "REDIS_URL": payload["redis"],
    }


def write_env_file(path: Path, values: dict[str, str], *, text: str | None = None) -> None:
    """KEY=value lines (read by `manage.py host agent`, not by a shell), or `text`, 0600 from the
    start and in place at once: a temporary file beside it, synced, then renamed over it."""
    for key, value in values.items():
        if "\n" in value or "\r" in value or "\0" in value:
            raise JoinError(f"{key} holds a line break: it cannot be written to {path}.")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text if text is not None else "".join(f"{k}={v}\n" for k, v in values.items()))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            values[key.strip()] = value
    return values


def revoked(host_name: str) -> bool:
    """Whether the agent of `host_name` must stop (its heartbeat asks): its host was disabled by
    revoking the token it joined with, or is gone (deleted on the Hosts page), or is no longer
    one an agent serves (made anew under its name): its workers must not go on reading the
    queues of that name, whose tasks are no longer this machine's."""
    row = Host.objects.filter(name=host_name).values("pk", "agent", "enabled").first()
    if row is None or not row["agent"]:
        return True
    return not row["enabled"] and JoinToken.objects.filter(host_id=row["pk"], revoked_at__isnull=False).exists()
