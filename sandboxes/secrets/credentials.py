"""Secrets, git identity and SSH keys: set and changed here (audited by name, never by value),
handed to a sandbox at each start (deliver), and never anywhere else.

Environment secrets go into the container's environment when it is made: anyone who may use
Docker on this machine can read them with `docker inspect`, as with any container. File secrets
and the SSH key are written after the start into /run/secrets, a tmpfs readable by the
sandbox's user only, through `docker exec` with the value in the exec's environment: they touch
no disk, no image, no log. A change takes effect at the next start (the container label
`io.ccpanel.secrets`, a keyed digest of everything given, makes the start recreate it).
"""

import logging
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db import transaction
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
}  # fmt: skip
# What one sandbox or one team may hold: what a start can hand over (the environment's size
# limit, the 4 MiB /run/secrets) must never be exceeded by saving secrets.
MAX_SECRETS = 50
MAX_TOTAL_BYTES = 1024 * 1024
GIT_TEXT_RE = re.compile(r"^[^\x00-\x1f\x7f\"\\]{1,200}$")
EMAIL_RE = re.compile(r"^[^\s@\"\\<>\x00-\x1f\x7f]{1,64}@[^\s@\"\\<>\x00-\x1f\x7f]{1,189}$")


# --- secrets ---------------------------------------------------------------------------------------


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
        errors["delivery"] = ["Deliver as an environment variable or as a file."]
    return errors


def _audit_secret(actor, action: str, secret: Secret, details: dict | None = None, source_ip: str | None = None) -> None:
    details = {"name": secret.name, "delivery": secret.delivery, **(details or {})}
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
    source_ip: str | None = None,
) -> Secret:
    """Save a secret, or rotate it (a new value) if one of that name exists. The value is
    encrypted before it reaches the database and is never returned."""
    if (sandbox is None) == (team is None):
        raise ValueError("a secret belongs to a sandbox or to a team")
    _authorize_for(actor, sandbox=sandbox, team=team)
    name = name.strip() if isinstance(name, str) else name
    errors = _check_secret(name, value, delivery)
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
                ciphertext=sealed,
                created_by=actor_user(actor),
                rotated_at=timezone.now(),
            )
            _audit_secret(actor, "secret.created", secret, source_ip=source_ip)
        else:
            found.ciphertext, found.delivery, found.rotated_at = sealed, delivery, timezone.now()
            found.save(update_fields=["ciphertext", "delivery", "rotated_at"])  # a disabled one stays disabled
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


@sensitive_variables("found")
def secrets_for(sandbox: Sandbox) -> dict[str, tuple[str, str]]:
    """name -> (delivery, value) of every enabled secret the sandbox receives: its team's, and
    its own over them."""
    found: dict[str, tuple[str, str]] = {}
    own = {s.name: s for s in Secret.objects.filter(sandbox=sandbox)}
    for secret in Secret.objects.filter(team_id=sandbox.team_id, enabled=True).exclude(name__in=list(own)):
        found[secret.name] = (secret.delivery, vault.unseal(secret.ciphertext))
    for secret in own.values():  # a sandbox's own, disabled, also holds the team's of that name back
        if secret.enabled:
            found[secret.name] = (secret.delivery, vault.unseal(secret.ciphertext))
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
    env = {name: value for name, (delivery, value) in given.items() if delivery == Secret.Delivery.ENV}
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
