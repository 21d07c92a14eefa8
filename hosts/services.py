"""Writes to hosts: add one, enable or drain it, delete an empty one (superusers only, each
audited in the same transaction), and the heartbeat the events watcher writes."""

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from audit.services import audit_record
from teams.permissions import Role, SystemActor, actor_name, actor_user, authorize_cap

from .models import LOCAL, Host
from .queues import JOBS_SUFFIX, tell_panel_workers

LABEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
URL_SCHEMES = ("unix://", "tcp://", "ssh://")
URL_MAX_LENGTH = 255  # Host.docker_url's max_length: PostgreSQL refuses more, SQLite would keep it
CPUS_LIMIT = Decimal(100_000)  # Host.cpus: 7 digits, 2 after the point
MEMORY_MB_MAX = 2**31 - 1  # Host.memory_mb: a PositiveIntegerField
DISK_MB_MAX = 2**63 - 1  # Host.disk_mb: a PositiveBigIntegerField


class HostError(Exception):
    """A host change the rules refuse; `errors` maps a field ("" for the whole form) to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__(" ".join(m for msgs in errors.values() for m in msgs))


def local_host() -> Host:
    """The "local" row (this machine's engine, as the settings name it). Made again from this
    machine only when there is no host at all, so that a panel always has somewhere to put a
    sandbox; a panel whose admin removed "local" beside other hosts gets it from nowhere."""
    found = Host.objects.filter(name=LOCAL).first()
    if found is not None:
        return found
    # Other hosts than "local", not any host: two callers that both found none must not refuse
    # each other (the first one's "local" counts as a host to the second); get_or_create settles
    # who makes it (the name is unique).
    if Host.objects.exclude(name=LOCAL).exists():
        raise Host.DoesNotExist('There is no "local" host.')
    return Host.objects.get_or_create(name=LOCAL)[0]


def require_superuser(actor) -> None:
    if isinstance(actor, SystemActor):
        return  # the shell: root on the panel's machine
    if not getattr(actor, "is_superuser", False):
        raise PermissionDenied("Only a superuser manages hosts.")
    authorize_cap(Role.ADMIN)  # through an API token, one of the admin scope


def _audit(actor, action: str, host: Host | str, details: dict, source_ip: str | None) -> None:
    """One host change in the audit trail (inside the change's transaction); `host` is the row
    or, for a host not made yet (a join token's), its name."""
    audit_record(
        actor=actor_user(actor),
        actor_name=actor_name(actor),
        action=action,
        target=f"host {host if isinstance(host, str) else host.name}",
        details=details,
        source_ip=source_ip,
    )


def clean_labels(labels: Sequence[str] | str) -> list[str]:
    """Labels as a sorted list without repeats: from a list, or text separated by commas or
    spaces. HostError for one that is not lower-case letters, digits, ".", "_" or "-"."""
    items = labels.replace(",", " ").split() if isinstance(labels, str) else list(labels)
    bad = [label for label in items if not isinstance(label, str) or not LABEL.match(label)]
    if bad:
        raise HostError({"labels": [f"Labels are lower-case letters, digits, '.', '_' and '-' (not {', '.join(map(repr, bad))})."]})
    return sorted(set(items))


def name_errors(name: str) -> list[str]:
    """What is wrong with a new host's name (empty: nothing)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name or ""):
        return ["Name: lower-case letters, digits and '-', at most 63."]
    if name.endswith(JOBS_SUFFIX):
        return [f"Name: may not end in {JOBS_SUFFIX!r} (its task queue would be another host's jobs queue)."]
    return []


def _printable_ascii(url: str) -> bool:
    return all("!" <= c <= "~" for c in url)  # no space, control character, NUL or other script's character


def docker_url_errors(url: str) -> list[str]:
    """What is wrong with a host's Docker URL (empty: nothing; blank is this machine's default)."""
    if not url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if (
        not url.startswith(URL_SCHEMES)
        or len(url) > URL_MAX_LENGTH
        or not _printable_ascii(url)
        or (url.startswith("unix://") and not url.startswith("unix:///"))  # a relative path: the cwd's
        or password is not None  # shown on pages, audited, put in errors: never a password
    ):
        return [
            "Docker URL: unix:///path/to/docker.sock, tcp://address:port or ssh://user@machine, at most 255 "
            "printable characters, no password (blank: this machine's)."
        ]
    return []


def panel_url_errors(url: str) -> list[str]:
    """What is wrong with an agent's panel URL, its engine's TLS endpoint as the panel reaches it
    (empty: nothing; blank: none). tcp://ADDRESS:PORT and nothing more: no user or password (it is
    shown, audited and put in error messages), path, query or fragment."""
    if not url:
        return []
    problem = [
        "Panel URL: tcp://ADDRESS:PORT, the engine's TLS endpoint (Docker's --tlsverify), at most 255 printable "
        "characters, with no user, password or path."
    ]
    if not url.startswith("tcp://") or len(url) > URL_MAX_LENGTH or not _printable_ascii(url):
        return problem
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return problem
    if parts.username is not None or parts.password is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
        return problem
    if not parts.hostname or not port:
        return problem
    return []


def _validate(*, name: str, docker_url: str, cpus, memory_mb, disk_mb) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if problems := name_errors(name):
        errors["name"] = problems
    if problems := docker_url_errors(docker_url):
        errors["docker_url"] = problems
    try:
        if not Decimal(str(cpus)).is_finite() or not Decimal("0.25") <= Decimal(str(cpus)) < CPUS_LIMIT:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        errors["cpus"] = [f"CPUs: a number, at least 0.25 and below {CPUS_LIMIT}."]
    # The columns' bounds: PostgreSQL refuses more (an error page), SQLite past 64 bits.
    for field, value, most in (("memory_mb", memory_mb, MEMORY_MB_MAX), ("disk_mb", disk_mb, DISK_MB_MAX)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
            errors[field] = [f"{field.replace('_mb', '').capitalize()}: a whole number of MB, at most {most}."]
    return errors


def host_create(
    *,
    actor,
    name: str,
    docker_url: str = "",
    cpus: Decimal | None = None,
    memory_mb: int | None = None,
    disk_mb: int | None = None,
    labels: Sequence[str] | str = (),
    source_ip: str | None = None,
) -> Host:
    """Record a host. Capacity left out is read from this machine (the engine's machine when it
    is this one; an admin states it for another). Nothing is asked of the engine here: the
    events watcher's heartbeat says whether it answers."""
    require_superuser(actor)
    host = Host(name=(name or "").strip(), docker_url=(docker_url or "").strip())
    host.cpus = Decimal(str(cpus)) if cpus is not None else host.cpus
    host.memory_mb = memory_mb if memory_mb is not None else host.memory_mb
    host.disk_mb = disk_mb if disk_mb is not None else host.disk_mb
    errors = _validate(name=host.name, docker_url=host.docker_url, cpus=host.cpus, memory_mb=host.memory_mb, disk_mb=host.disk_mb)
    try:
        host.labels = clean_labels(labels)
    except HostError as exc:
        errors.update(exc.errors)
    if errors:
        raise HostError(errors)
    try:
        with transaction.atomic():
            host.save()
            details = {"docker_url": host.docker_url, "cpus": str(host.cpus), "memory_mb": host.memory_mb, "disk_mb": host.disk_mb}
            _audit(actor, "host.create", host, {**details, "labels": host.labels}, source_ip)
            transaction.on_commit(lambda: tell_panel_workers(host.name))  # no agent: this machine's workers serve it
    except IntegrityError as exc:
        raise HostError({"name": [f"A host named {host.name!r} exists."]}) from exc
    return host


def host_set_state(*, actor, host: Host, enabled: bool | None = None, draining: bool | None = None, source_ip: str | None = None) -> Host:
    """Enable or disable a host, or drain it (it keeps its sandboxes, and takes no new one).
    Audited only when something changed."""
    require_superuser(actor)
    changes = {f: v for f, v in (("enabled", enabled), ("draining", draining)) if v is not None}
    with transaction.atomic():
        current = Host.objects.select_for_update().get(pk=host.pk)
        changed = {f: {"was": getattr(current, f), "now": v} for f, v in changes.items() if getattr(current, f) != v}
        if changed:
            Host.objects.filter(pk=host.pk).update(**{f: c["now"] for f, c in changed.items()})
            _audit(actor, "host.update", current, changed, source_ip)
    host.refresh_from_db()
    return host


def host_delete(*, actor, host: Host, source_ip: str | None = None) -> None:
    """Delete a host that holds no sandbox (a destroyed one's row still names it: those count
    too, since the row keeps its history) and that no move's record names. HostError otherwise."""
    require_superuser(actor)
    with transaction.atomic():
        current = Host.objects.select_for_update().filter(pk=host.pk).first()
        if current is None:
            return
        if (held := current.sandboxes.count()) > 0:
            raise HostError({"": [f"Host {current.name} holds {held} sandbox(es) (destroyed ones included): it cannot be deleted."]})
        if (slots := current.warm_slots.count()) > 0:
            # Their rows would go with it, their started containers and folders stay on its engine.
            raise HostError(
                {
                    "": [
                        f"Host {current.name} holds {slots} slot(s) of its warm pool (started containers on its engine): drain "
                        "it (enabled), let its next resync remove them (its worker or agent running), then delete it."
                    ]
                }
            )
        _audit(actor, "host.delete", current, {"docker_url": current.docker_url}, source_ip)
        try:
            current.delete()
        except ProtectedError:
            # A move's record names it (from or to): it keeps its history, as a sandbox's row does.
            raise HostError(
                {"": [f"Host {current.name} is named by the record of a sandbox's move to or from it: it cannot be deleted."]}
            ) from None


def host_heartbeat(*, host_name: str, engine_version: str = "", error: str = "") -> int:
    """The events watcher's beat: when it last looked, the engine's version, and what went
    wrong (blank when it answered). One UPDATE; the version seen last is kept while the engine
    does not answer. Returns the rows written (0: no such host)."""
    values: dict = {"last_heartbeat": timezone.now(), "last_error": error[:2000]}
    if engine_version:
        values["engine_version"] = engine_version[:64]
    return Host.objects.filter(name=host_name).update(**values)
