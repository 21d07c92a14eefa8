"""Every write to a sandbox, one module per concern:

    create     validating and recording a new sandbox
    claims     one action at a time: claim, take the run (heartbeat), finish, re-queue
    actions    the action table and the lifecycle actions (request, then perform in a task)
    network    changing a sandbox's network mode, live
    allowlist  what allowlist mode reaches, and its grants kept true
    terminals  browser terminals: who opened one into which sandbox, when, for how long
    transfer   files in through imports/ and out of exports/, each transfer audited
    checklist  a team's manual checklist items and a sandbox's ticks (the checks: ../checklist.py)
    reconcile  keeping state true when Docker changes behind the panel's back

and what they share:

    errors     SandboxError and its kinds (InvalidInput, NotQueued), LostClaim
    auditing   audit(): the audit event of a write to a sandbox
    rules      the installation's policy rules (settings, the panel's own folders, SELinux)
    specs      the container specs built from a sandbox's saved settings (its own, the helper)

The networks of the modes and whether a sandbox may join one are sandboxes.network's (bridges,
gate).

Views, consumers, tasks and the CLI call what is named here; reads live in ../selectors.py.
"""

from teams.permissions import SystemActor

from .actions import ACTIONS, Action, actions_allowed, allowed_actions, sandbox_perform, sandbox_request_action
from .allowlist import (
    WideningRefused,
    allowlist_clients,
    authorize_egress,
    grants_repair,
    sandbox_allow_refused,
    sandbox_set_allowlist,
    sync_grants,
    team_set_allowlist,
)
from .claims import claim, finish, requeue_stale_actions
from .create import sandbox_create, sandbox_reapprove_folders, validate_settings
from .errors import InvalidInput, LostClaim, NotQueued, SandboxError
from .network import sandbox_set_network
from .reconcile import (
    egress_repair,
    observed_status,
    proxy_check,
    reconcile_all,
    record_engine_event,
    remove_orphans,
    sandbox_sync,
    sandbox_sync_container,
    stop_networked,
)
from .rules import policy_rules
from .specs import sandbox_spec

__all__ = [
    "ACTIONS",
    "Action",
    "InvalidInput",
    "LostClaim",
    "NotQueued",
    "SandboxError",
    "SystemActor",
    "actions_allowed",
    "allowed_actions",
    "claim",
    "finish",
    "observed_status",
    "policy_rules",
    "reconcile_all",
    "record_engine_event",
    "remove_orphans",
    "requeue_stale_actions",
    "sandbox_create",
    "sandbox_perform",
    "sandbox_reapprove_folders",
    "sandbox_request_action",
    "sandbox_set_network",
    "sandbox_set_allowlist",
    "authorize_egress",
    "sandbox_allow_refused",
    "team_set_allowlist",
    "WideningRefused",
    "sync_grants",
    "allowlist_clients",
    "sandbox_spec",
    "sandbox_sync",
    "egress_repair",
    "proxy_check",
    "stop_networked",
    "grants_repair",
    "sandbox_sync_container",
    "validate_settings",
]
