"""Secrets, git identity and SSH keys: set and changed here (audited by name, never by value),
handed to a sandbox at each start (deliver), and never anywhere else.

Proxy secrets ("Injected by the proxy") never enter the sandbox: its environment holds a
placeholder (`ccp-placeholder-…`, keyed from the secret's id, never from its value), and the
panel's credential proxy (sandboxes.network.proxy) sets the real value, in the secret's header,
on requests to the secret's hosts and no other (proxy_secrets_for).

Environment secrets go into the container's environment when it is made: anyone who may use
Docker on this machine can read them with `docker inspect`, as with any container. File secrets
and the SSH key are written after the start into /run/secrets, a tmpfs readable by the
sandbox's user only, through `docker exec` with the value in the exec's environment: they touch
no disk, no image, no log. A change takes effect at the next start (the container label
`io.ccpanel.secrets`, a keyed digest of everything given, makes the start recreate it).
"""

import logging
import re
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from controlpanel.names import bidi_problem
from teams.models import Team
from teams.permissions import Role, SystemActor, actor_user, authorize
from teams.services import audit_team

from .. import engine, policy
from ..models import Identity, Sandbox, Secret
from ..services.auditing import audit
from ..services.errors import InvalidInput
from . import vault

log = logging.getLogger(__name__)
SECRETS_DIR = "/run/secrets"
SSH_KEY_FILE = f"{SECRETS_DIR}/id_ed25519"
LABEL_SECRETS = "io.ccpanel.secrets"
MAX_VALUE_BYTES = 64 * 1024
# Names that would break the sandbox, or that the panel sets itself.
RESERVED = {
    "HOME", "PATH", "USER", "SHELL", "HOSTNAME", "TERM", "PWD", "LANG", "NODE_EXTRA_CA_CERTS",
    "GIT_SSH_COMMAND", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
    "ID_ED25519",  # the SSH key's file in /run/secrets
    # The credential proxy's (sandboxes.network.proxy_ca.environment)
    "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "SSL_CERT_FILE", "GIT_SSL_CAINFO", "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE", "NODE_USE_ENV_PROXY",
}  # fmt: skip
PLACEHOLDER_PREFIX = "ccp-placeholder-"
MAX_HOSTS = 20
HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}(: (Bearer|Basic|token|Token))?$")
# Headers the proxy never sets: they steer the request itself, not who makes it.
FORBIDDEN_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "proxy-authorization", "cookie"}
# What one sandbox or one team may hold: what a start can hand over (the environment's size
# limit, the 4 MiB /run/secrets) must never be exceeded by saving secrets.
MAX_SECRETS = 50
MAX_TOTAL_BYTES = 1024 * 1024
GIT_TEXT_RE = re.compile(r"^[^\x00-\x1f\x7f\"\\]{1,200}$")
EMAIL_RE = re.compile(r"^[^\s@\"\\<>\x00-\x1f\x7f]{1,64}@[^\s@\"\\<>\x00-\x1f\x7f]{1,189}$")


# --- secrets ---------------------------------------------------------------------------------------


def _check_binding(hosts: str, header: str) -> dict[str, list[str]]:
    """A proxy secret's hosts (names or *.wildcards, space-separated) and header ("x-api-key",
    "Authorization: Bearer"): what is wrong with them, in words."""
    from ..network import allowlist

    errors: dict[str, list[str]] = {}
    names = hosts.split() if isinstance(hosts, str) else []
    bad = [h for h in names if not allowlist.NAME_RE.match(h.lower()) or len(h) > 253 or "*" in h[2:]]
    if not names or bad or len(names) > MAX_HOSTS:
        what = f"{bad[0][:60]!r} is not a host name. " if bad else ""
        errors["hosts"] = [
            f"{what}From 1 to {MAX_HOSTS} host names (api.example.com, *.example.com for its subdomains), separated by spaces."
        ]
    if not isinstance(header, str) or not HEADER_RE.fullmatch(header.strip()):
        errors["header"] = ["A header name (x-api-key), optionally followed by ': Bearer' (Authorization: Bearer)."]
    elif header.split(":", 1)[0].strip().lower() in FORBIDDEN_HEADERS:
        errors["header"] = [f"The proxy does not set {header.split(':', 1)[0].strip()}; name the header the service reads its key from."]
    return errors


def placeholder(secret: Secret) -> str:
    """What a sandbox holds instead of a proxy secret: random-looking, stable for the secret,
    keyed by the vault's key from the secret's id (never from its value)."""
    return PLACEHOLDER_PREFIX + vault.digest([("placeholder", f"{secret.pk}")])


def _check_secret(name: str, value: str, delivery: str) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if not isinstance(name, str) or not policy.ENV_NAME_RE.fullmatch(name):
        errors["name"] = ["A name of letters, digits and '_', not starting with a digit (at most 128)."]
    elif name.upper() in RESERVED:
        errors["name"] = [f"{name} is set by the panel or the image; pick another name."]
    if not isinstance(value, str) or not value:
        errors["value"] = ["A value is required."]
    elif "\x00" in value or len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        errors["value"] = [f"A value of at most {MAX_VALUE_BYTES // 1024} KB, without NUL characters."]
    if delivery not in Secret.Delivery.values:
        errors["delivery"] = ["Deliver as an environment variable, as a file or injected by the proxy."]
    return errors


def _audit_secret(actor, action: str, secret: Secret, details: dict | None = None, source_ip: str | None = None) -> None:
    details = {"name": secret.name, "delivery": secret.delivery, **(details or {})}
    if secret.delivery == Secret.Delivery.PROXY:
        details.update(hosts=secret.hosts, header=secret.header)  # where it goes; never its value
    if secret.sandbox is not None:
        audit(actor, action, secret.sandbox, details, source_ip)
    elif secret.team is not None:
        audit_team(actor, action, secret.team, details, source_ip)
    else:
        raise ValueError("a secret belongs to a sandbox or to a team")


def _authorize_for(actor, *, sandbox: Sandbox | None, team: Team | None) -> None:
    if sandbox is not None:
        authorize(actor, sandbox.team, Role.OPERATOR)
    elif team is not None:
        authorize(actor, team, Role.ADMIN)  # a team's secrets reach every sandbox of the team
    else:
        raise ValueError("a secret belongs to a sandbox or to a team")


@sensitive_variables("value", "sealed")
def secret_set(
    *,
    actor,
    name: str,
    value: str,
    delivery: str = Secret.Delivery.ENV,
    sandbox: Sandbox | None = None,
    team: Team | None = None,
    hosts: str = "",
    header: str = "",
    source_ip: str | None = None,
) -> Secret:
    """Save a secret, or rotate it (a new value) if one of that name exists. The value is
    encrypted before it reaches the database and is never returned. A proxy secret names the
    hosts it is sent to and its header; any other keeps neither."""
    if (sandbox is None) == (team is None):
        raise ValueError("a secret belongs to a sandbox or to a team")
    _authorize_for(actor, sandbox=sandbox, team=team)
    name = name.strip() if isinstance(name, str) else name
    errors = _check_secret(name, value, delivery)
    if delivery == Secret.Delivery.PROXY:
        errors.update(_check_binding(hosts, header))
        hosts, header = " ".join(h.lower() for h in hosts.split()), header.strip()
    else:
        hosts, header = "", ""
    if errors:
        raise InvalidInput(errors)
    sealed = vault.seal(value)
    with transaction.atomic():
        found = Secret.objects.select_for_update().filter(sandbox=sandbox, team=team, name=name).first()
        others = Secret.objects.filter(sandbox=sandbox, team=team).exclude(name=name)
        if (
            others.count() >= MAX_SECRETS
            or sum(len(c) for c in others.values_list("ciphertext", flat=True)) + len(sealed) > MAX_TOTAL_BYTES * 4 // 3 + 1024
        ):
            raise InvalidInput(
                {"value": [f"At most {MAX_SECRETS} secrets of {MAX_TOTAL_BYTES // 1024} KB in all, here: this one would pass that."]}
            )
        if found is None:
            secret = Secret.objects.create(
                sandbox=sandbox,
                team=team,
                name=name,
                delivery=delivery,
                hosts=hosts,
                header=header,
                ciphertext=sealed,
                created_by=actor_user(actor),
                rotated_at=timezone.now(),
            )
            _audit_secret(actor, "secret.created", secret, source_ip=source_ip)
        else:
            found.ciphertext, found.delivery, found.rotated_at = sealed, delivery, timezone.now()
            found.hosts, found.header = hosts, header
            found.save(update_fields=["ciphertext", "delivery", "hosts", "header", "rotated_at"])  # a disabled one stays disabled
            secret = found
            _audit_secret(actor, "secret.rotated", secret, source_ip=source_ip)
    return secret


def secret_enable(*, actor, secret: Secret, enabled: bool, source_ip: str | None = None) -> None:
    _authorize_for(actor, sandbox=secret.sandbox, team=secret.team)
    with transaction.atomic():
        if Secret.objects.filter(pk=secret.pk).exclude(enabled=enabled).update(enabled=enabled):
            secret.enabled = enabled
            _audit_secret(actor, "secret.enabled" if enabled else "secret.disabled", secret, source_ip=source_ip)


def secret_delete(*, actor, secret: Secret, source_ip: str | None = None) -> None:
    _authorize_for(actor, sandbox=secret.sandbox, team=secret.team)
    with transaction.atomic():
        if Secret.objects.filter(pk=secret.pk).delete()[0]:
            _audit_secret(actor, "secret.deleted", secret, source_ip=source_ip)


def given_to(sandbox_id: int, team_id: int) -> list[Secret]:
    """Every enabled secret a sandbox receives: its team's, and its own over them (still sealed)."""
    own = {s.name: s for s in Secret.objects.filter(sandbox_id=sandbox_id)}
    found = {s.name: s for s in Secret.objects.filter(team_id=team_id, enabled=True).exclude(name__in=list(own))}
    found.update({name: s for name, s in own.items() if s.enabled})  # a sandbox's own, disabled, holds the team's back
    return list(found.values())


@sensitive_variables("found")
def secrets_for(sandbox: Sandbox) -> dict[str, tuple[str, str]]:
    """name -> (delivery, value) of every enabled secret the sandbox receives: its team's, and
    its own over them. A proxy secret's value here is its placeholder."""
    found: dict[str, tuple[str, str]] = {}
    for secret in given_to(sandbox.pk, sandbox.team_id):
        value = placeholder(secret) if secret.delivery == Secret.Delivery.PROXY else vault.unseal(secret.ciphertext)
        found[secret.name] = (secret.delivery, value)
    return found


@dataclass(frozen=True)
class Binding:
    """A proxy secret as the credential proxy uses it: where it goes and what it replaces."""

    name: str
    hosts: tuple[str, ...]  # names, or "*.example.com" for its subdomains
    header: str  # the header's name
    scheme: str  # "" or "Bearer", "Basic", "token": written before the value
    value: str = field(repr=False)

    def binds(self, host: str) -> bool:
        host = host.rstrip(".").lower()
        return any(host.endswith(h[1:]) if h.startswith("*.") else host == h for h in self.hosts)

    def header_value(self) -> str:
        return f"{self.scheme} {self.value}" if self.scheme else self.value


@sensitive_variables("secret", "value")
def proxy_secrets_for(sandboxes: dict[int, int]) -> dict[int, list[Binding]]:
    """The proxy secrets of sandboxes (pk -> team pk), with their values, in two queries: for the
    credential proxy only. A sandbox's own secret of a name (enabled or not) holds its team's back."""
    own: dict[int, dict[str, Secret]] = {}
    teams: dict[int, dict[str, Secret]] = {}
    rows = Secret.objects.filter(Q(sandbox_id__in=list(sandboxes)) | Q(team_id__in=set(sandboxes.values()), enabled=True))
    for secret in rows:
        if secret.sandbox_id is not None:
            own.setdefault(secret.sandbox_id, {})[secret.name] = secret
        elif secret.team_id is not None:
            teams.setdefault(secret.team_id, {})[secret.name] = secret
    found: dict[int, list[Binding]] = {}
    for pk, team_id in sandboxes.items():
        mine = {**teams.get(team_id, {}), **own.get(pk, {})}
        for secret in mine.values():
            if secret.enabled and secret.delivery == Secret.Delivery.PROXY:
                name, _, scheme = secret.header.partition(":")
                value = vault.unseal(secret.ciphertext)
                found.setdefault(pk, []).append(Binding(secret.name, tuple(secret.hosts.split()), name.strip(), scheme.strip(), value))
    return found


# --- git identity and SSH key --------------------------------------------------------------------------


def identity_of(sandbox: Sandbox) -> Identity:
    return Identity.objects.get_or_create(sandbox=sandbox)[0]


def git_identity_set(*, actor, sandbox: Sandbox, name: str, email: str, source_ip: str | None = None) -> Identity:
    authorize(actor, sandbox.team, Role.OPERATOR)
    name, email = (name or "").strip(), (email or "").strip()
    errors: dict[str, list[str]] = {}
    if not name and not email:
        pass  # cleared
    elif not GIT_TEXT_RE.fullmatch(name):
        errors["git_name"] = ["A name of at most 200 characters, without quotes, backslashes or control characters."]
    elif problem := bidi_problem(name, "A git name"):
        errors["git_name"] = [problem]
    if (name or email) and not EMAIL_RE.fullmatch(email):
        errors["git_email"] = ["An e-mail address such as agent@example.com."]
    if errors:
        raise InvalidInput(errors)
    with transaction.atomic():
        identity = identity_of(sandbox)
        identity.git_name, identity.git_email = name, email
        identity.save(update_fields=["git_name", "git_email"])
        audit(actor, "sandbox.git_identity", sandbox, {"name": name, "email": email}, source_ip)
    return identity


def ssh_key_regenerate(*, actor, sandbox: Sandbox, source_ip: str | None = None) -> Identity:
    """A new ed25519 key for the sandbox (the old one is gone for good). Returns the identity,
    whose `ssh_public` is what to paste into a forge."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    public = f"{public} {sandbox.name}@ccpanel"
    with transaction.atomic():
        identity = Identity.objects.select_for_update().get_or_create(sandbox=sandbox)[0]
        replaced = bool(identity.ssh_public)
        identity.ssh_public, identity.ssh_private, identity.ssh_created_at = public, vault.seal(private), timezone.now()
        identity.save(update_fields=["ssh_public", "ssh_private", "ssh_created_at"])
        audit(actor, "sandbox.ssh_key", sandbox, {"public": public, "replaced": replaced}, source_ip)
    return identity


def forget(sandbox: Sandbox) -> None:
    """Destroy: the sandbox's own secrets and its SSH key go with it (audited by name)."""
    names = sorted(Secret.objects.filter(sandbox=sandbox).values_list("name", flat=True))
    Secret.objects.filter(sandbox=sandbox).delete()
    had_key = Identity.objects.filter(sandbox=sandbox).exclude(ssh_private="").update(ssh_private="")
    if names or had_key:
        audit(SystemActor("destroy"), "secret.forgotten", sandbox, {"names": names, "ssh_key": bool(had_key)})


# --- handing them over ---------------------------------------------------------------------------------


def container_environment(sandbox: Sandbox) -> tuple[dict[str, str], str]:
    """(environment, digest label) for the sandbox's container: its environment secrets, and a
    keyed digest of everything deliver() will hand over, so a change makes the container anew."""
    given = secrets_for(sandbox)
    env = {name: value for name, (delivery, value) in given.items() if delivery in (Secret.Delivery.ENV, Secret.Delivery.PROXY)}
    identity = Identity.objects.filter(sandbox=sandbox).first()
    items = [(f"{delivery}:{name}", value) for name, (delivery, value) in given.items()]
    if identity is not None:
        items += [("git:name", identity.git_name), ("git:email", identity.git_email), ("ssh", identity.ssh_public)]
        if identity.git_name and identity.git_email:
            # Whatever the sandbox does to its .gitconfig, its commits carry this identity.
            env.update(
                GIT_AUTHOR_NAME=identity.git_name,
                GIT_AUTHOR_EMAIL=identity.git_email,
                GIT_COMMITTER_NAME=identity.git_name,
                GIT_COMMITTER_EMAIL=identity.git_email,
            )
        if identity.ssh_public:
            env["GIT_SSH_COMMAND"] = f"ssh -i {SSH_KEY_FILE} -o IdentitiesOnly=yes"
    return env, vault.digest(items)  # also when empty: a container given secrets before differs


FILE_SCRIPT = 'umask 077 && printf "%s" "$CCP_VALUE" > "$CCP_PATH"'
GIT_SCRIPT = (
    "if command -v git >/dev/null 2>&1; then "
    'git config --global user.name "$CCP_NAME" && git config --global user.email "$CCP_EMAIL"; '
    'elif [ ! -e "$HOME/.gitconfig" ]; then '
    'printf "[user]\\n\\tname = %s\\n\\temail = %s\\n" "$CCP_NAME" "$CCP_EMAIL" > "$HOME/.gitconfig"; fi'
)


@sensitive_variables("writes", "value")
def deliver(sandbox: Sandbox, container_id: str) -> None:
    """After a start: the file secrets and the SSH key into /run/secrets, the git identity into
    the home's .gitconfig. Raises EngineError if the container refuses them."""
    docker = engine.engine_for(sandbox)
    user = f"{settings.SANDBOX_UID}:{settings.SANDBOX_GID}"
    home = f"/home/{settings.SANDBOX_USER}"
    writes = [
        (f"{SECRETS_DIR}/{name}", value) for name, (delivery, value) in secrets_for(sandbox).items() if delivery == Secret.Delivery.FILE
    ]
    identity = Identity.objects.filter(sandbox=sandbox).first()
    if identity is not None and identity.ssh_private:
        writes.append((SSH_KEY_FILE, vault.unseal(identity.ssh_private)))
    for path, value in writes:
        code, out = docker.exec_run(
            container_id, ["/bin/sh", "-c", FILE_SCRIPT], user=user, environment={"CCP_PATH": path, "CCP_VALUE": value}
        )
        if code != 0:
            raise engine.EngineError(f"could not write {path} in the sandbox: {out.strip()[:200]}")
    if identity is not None and identity.git_name and identity.git_email:
        code, out = docker.exec_run(
            container_id,
            ["/bin/sh", "-c", GIT_SCRIPT],
            user=user,
            environment={"CCP_NAME": identity.git_name, "CCP_EMAIL": identity.git_email, "HOME": home},
        )
        if code != 0:
            # The home is the sandbox's own to break (a .gitconfig git cannot read): the identity
            # is in the environment anyway, and the start goes on.
            log.warning("the git identity could not be written into %s's .gitconfig: %s", sandbox.name, out.strip()[:200])
