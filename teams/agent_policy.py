"""A team's policy for Claude Code itself (AgentPolicy): its managed settings, judged against
the keys Claude Code's managed-settings.json knows, set by a team admin and audited with a digest
of the JSON and which keys changed. Delivered into every sandbox of the team at its start by
sandboxes.managed_settings (read-only, root-owned, /etc/claude-code/managed-settings.json)."""

import hashlib
import json

from django.db import transaction

from .models import AgentPolicy, Team
from .permissions import Role, authorize
from .services import TeamError, audit_team

MAX_BYTES = 64 * 1024
MAX_DEPTH = 12
PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk")

# Claude Code's managed-settings.json: its top-level keys and what each must be. A key not here
# is refused rather than passed on: a misspelt "premissions" would otherwise be silently ignored
# by Claude Code, the team believing a rule is in force that is not.
STRINGS, BOOL, INT, OBJECT = "a list of strings", "true or false", "a whole number", "an object"
KNOWN_KEYS: dict[str, str] = {
    "permissions": OBJECT,
    "hooks": OBJECT,
    "env": OBJECT,
    "sandbox": OBJECT,
    "statusLine": OBJECT,
    "disableAllHooks": BOOL,
    "allowManagedHooksOnly": BOOL,
    "allowManagedPermissionRulesOnly": BOOL,
    "enableAllProjectMcpServers": BOOL,
    "includeCoAuthoredBy": BOOL,
    "enabledMcpjsonServers": STRINGS,
    "disabledMcpjsonServers": STRINGS,
    "allowedMcpServers": "a list",
    "deniedMcpServers": "a list",
    "companyAnnouncements": STRINGS,
    "cleanupPeriodDays": INT,
    "model": "a string",
    "apiKeyHelper": "a string",
    "forceLoginMethod": "a string",
    "forceLoginOrgUUID": "a string",
    "outputStyle": "a string",
}
PERMISSION_KEYS: dict[str, str] = {
    "allow": STRINGS,
    "deny": STRINGS,
    "ask": STRINGS,
    "additionalDirectories": STRINGS,
    "defaultMode": f"one of {', '.join(PERMISSION_MODES)}",
    "disableBypassPermissionsMode": '"disable"',
}


def _is(value, kind: str) -> bool:
    if kind == STRINGS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if kind == OBJECT:
        return isinstance(value, dict)
    if kind == "a list":
        return isinstance(value, list)
    if kind == "a string":
        return isinstance(value, str)
    if kind == '"disable"':
        return value == "disable"
    return value in PERMISSION_MODES  # defaultMode


def _depth(value, level: int = 0) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def settings_errors(settings: object) -> list[str]:
    """What is wrong with `settings` as Claude Code's managed settings, in words ([] when fine)."""
    if not isinstance(settings, dict):
        return ["The managed settings must be a JSON object ({...})."]
    if len(canonical(settings)) > MAX_BYTES:
        return [f"The managed settings are larger than {MAX_BYTES // 1024} KiB."]
    if _depth(settings) > MAX_DEPTH:
        return [f"The managed settings nest deeper than {MAX_DEPTH} levels."]
    errors = []
    for key, value in settings.items():
        if key not in KNOWN_KEYS:
            errors.append(f"Unknown setting {key[:60]!r}: Claude Code's managed settings know {', '.join(sorted(KNOWN_KEYS))}.")
        elif not _is(value, KNOWN_KEYS[key]):
            errors.append(f"{key} must be {KNOWN_KEYS[key]}.")
    permissions = settings.get("permissions")
    if isinstance(permissions, dict):
        for key, value in permissions.items():
            if key not in PERMISSION_KEYS:
                errors.append(f"Unknown permissions setting {key[:60]!r}: known are {', '.join(PERMISSION_KEYS)}.")
            elif not _is(value, PERMISSION_KEYS[key]):
                errors.append(f"permissions.{key} must be {PERMISSION_KEYS[key]}.")
    env = settings.get("env")
    if isinstance(env, dict) and not all(isinstance(v, str) for v in env.values()):
        errors.append("env must map names to strings.")
    return errors


def parse_settings(text: str) -> tuple[dict, list[str]]:
    """The managed settings typed on the page: (settings, errors)."""
    if len(text.encode()) > MAX_BYTES * 2:
        return {}, [f"The managed settings are larger than {MAX_BYTES // 1024} KiB."]
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        return {}, [f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."]
    except RecursionError:
        return {}, [f"The managed settings nest deeper than {MAX_DEPTH} levels."]
    errors = settings_errors(value)
    return (value if not errors else {}), errors


def canonical(settings: dict) -> bytes:
    """The file's bytes: sorted keys, so the same settings are the same file and digest."""
    return (json.dumps(settings, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def digest(settings: dict) -> str:
    return hashlib.sha256(canonical(settings)).hexdigest()[:16]


def policy_of(team: Team | None) -> AgentPolicy | None:
    """The team's agent policy, or None (no team, or none set)."""
    return None if team is None else AgentPolicy.objects.filter(team=team).first()


def managed_settings_of(team: Team | None) -> dict:
    """What is delivered into the team's sandboxes: {} means no file."""
    found = policy_of(team)
    return dict(found.managed_settings) if found is not None and found.managed_settings else {}


def agent_policy_set(*, actor, team: Team, managed_settings: object, record_prompts: bool, source_ip: str | None = None) -> AgentPolicy:
    """Set the team's agent policy (team admins; superusers are admins of every team). Refused
    with TeamError, nothing changed, unless `managed_settings` passes settings_errors. Audited
    with the digest before and after and the top-level keys that changed; in force at each
    sandbox's next start."""
    authorize(actor, team, Role.ADMIN)
    if errors := settings_errors(managed_settings):
        raise TeamError(" ".join(errors))
    assert isinstance(managed_settings, dict)  # noqa: S101 - settings_errors refused anything else
    with transaction.atomic():
        row, _ = AgentPolicy.objects.select_for_update().get_or_create(team=team)
        before, had_prompts = dict(row.managed_settings or {}), row.record_prompts
        if before == managed_settings and had_prompts == record_prompts:
            return row
        row.managed_settings, row.record_prompts = managed_settings, bool(record_prompts)
        row.updated_by = actor if getattr(actor, "pk", None) else None
        row.save()
        changed = sorted(k for k in set(before) | set(managed_settings) if before.get(k) != managed_settings.get(k))
        details: dict[str, object] = {"from": digest(before) if before else "", "to": digest(managed_settings) if managed_settings else ""}
        details.update(keys_changed=changed, record_prompts=bool(record_prompts))
        audit_team(actor, "team.agent_policy_set", team, details, source_ip)
    return row
