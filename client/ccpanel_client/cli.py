"""`ccpanel RESOURCE COMMAND …`: argparse, one sub-command per verb.

A resource is described once (RESOURCES: its path, its list's filters and table columns); `list`
and `show` come from that description, and a resource's own verbs (a sandbox's create, actions
and logs) are added by a function of its own. A new resource is a Resource(...) entry, plus its
own verbs if it has any.

Output: a table (or `key: value` lines for one object) for people, `--json` for programs. Exit
codes: 0 done, 1 refused (by the panel, 4xx, or by the client: usage, configuration, an action
that failed or did not finish in time), 2 the panel could not be reached, 3 the panel failed (5xx).
"""

import argparse
import ipaddress
import json
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from . import __version__
from .api import EXIT_REFUSED, Api, ClientError
from .config import resolve

# --- resources -----------------------------------------------------------------------------


@dataclass
class Filter:
    flag: str  # --status
    param: str  # the list's query parameter
    help: str
    choices: list[str] | None = None
    required: bool = False


@dataclass
class Resource:
    name: str  # the command's word: `ccpanel sandbox …`
    path: str  # its list's URL; one object is at path + "<id>/"
    columns: list[tuple[str, Callable[[dict], Any]]]
    filters: list[Filter] = field(default_factory=list)
    add_verbs: Callable[[Any, "Resource"], None] | None = None  # its own verbs, beside list and show
    by_name: bool = True  # `show NAME` finds it by its exact name (a list search)
    plural: str = ""  # "sandboxes"; the name and an s when empty
    paged: bool = True  # its list answers a page at a time ({"results": …, "next": …}), or all at once (a list)

    @property
    def many(self) -> str:
        return self.plural or f"{self.name}s"


def _team(s: dict) -> str:
    team = s.get("team") or {}
    return team.get("name", "") if isinstance(team, dict) else str(team)


def _status(s: dict) -> str:
    pending = s.get("pending_action")
    return f"{s.get('status', '')} ({pending}…)" if pending else str(s.get("status", ""))


SANDBOX_STATUSES = ["creating", "running", "stopped", "paused", "error", "destroying"]
ACTIONS = ["start", "stop", "restart", "pause", "unpause", "reset", "clean", "destroy"]
# What each action leaves a sandbox in when it went well (None: gone).
ACTION_ENDS = {"start": "running", "restart": "running", "unpause": "running", "stop": "stopped", "pause": "paused", "destroy": None}


def add_sandbox_verbs(sub, resource: Resource) -> None:
    create = sub.add_parser("create", help="create a sandbox (as the New sandbox form) and start it", parents=[COMMON])
    create.add_argument("name")
    create.add_argument("--team", required=True, help="the team's id (or its name, if one of its sandboxes is listed)")
    create.add_argument("--image")
    create.add_argument("--memory", help="memory: MB, or with a unit (4g, 512m)")
    create.add_argument("--cpus", help="CPUs, e.g. 2 or 0.5")
    create.add_argument("--disk-mb", type=int, help="disk quota in MB")
    create.add_argument("--network", choices=["internet", "allowlist", "none"])
    create.add_argument("--preset", action="append", default=[], help="allowlist preset (claude-code, github, packages); repeatable")
    create.add_argument("--allow", action="append", default=[], help="allowlist entry (api.example.com:443); repeatable")
    create.add_argument("--runtime", choices=["runc", "runsc"])
    create.add_argument("--host", help="the host to place it on")
    create.add_argument("--writable-root", action="store_true")
    create.add_argument("--low-ports-and-ping", action="store_true")
    create.add_argument("--mount", action="append", default=[], metavar="HOST:CONTAINER[:ro]", help="extra mount; repeatable")
    create.add_argument("--wait", action="store_true", help="wait until it runs (or failed)")
    create.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits (300)")
    create.set_defaults(func=cmd_create, resource=resource)

    for action in ACTIONS:
        p = sub.add_parser(action, help=f"{action} a sandbox", parents=[COMMON])
        p.add_argument("id", help="the sandbox's id or name")
        p.add_argument("--wait", action="store_true", help="wait until the action is done (or failed)")
        p.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits (300)")
        if action == "destroy":
            p.add_argument("--yes", action="store_true", help="do not ask for the sandbox's name")
        p.set_defaults(func=cmd_action, action=action, resource=resource)

    logs = sub.add_parser("logs", help="its output: the last lines, or followed (-f)", parents=[COMMON])
    logs.add_argument("id", help="the sandbox's id or name")
    logs.add_argument("-f", "--follow", action="store_true", help="go on printing lines as they come, until it stops")
    logs.add_argument("--tail", type=int, default=200, help="how many last lines (0-5000, 200)")
    logs.add_argument("-t", "--timestamps", action="store_true", help="begin each line with its time and stream")
    logs.add_argument(
        "--raw", action="store_true", help="write the lines' bytes as they are (escape sequences included: for a file, not a terminal)"
    )
    logs.set_defaults(func=cmd_logs, resource=resource)

    backup = sub.add_parser("backup", help="back a sandbox up now (as the page's Back up now)", parents=[COMMON])
    backup.add_argument("id", help="the sandbox's id or name")
    backup.add_argument("--wait", action="store_true", help="wait until the backup is written (or failed)")
    backup.add_argument("--timeout", type=float, default=1800.0, help="seconds --wait waits (1800)")
    backup.set_defaults(func=cmd_backup, resource=resource)

    checkpoint = sub.add_parser("checkpoint", help="take a checkpoint of a sandbox (a snapshot of its files)", parents=[COMMON])
    checkpoint.add_argument("id", help="the sandbox's id or name")
    checkpoint.add_argument("--label", default="", help="a few words to tell it by")
    checkpoint.set_defaults(func=cmd_checkpoint, resource=resource)

    schedule = sub.add_parser(
        "schedule", help="its daily backup: shown, or changed by the options given (the others stay)", parents=[COMMON]
    )
    schedule.add_argument("id", help="the sandbox's id or name")
    schedule.add_argument("--at", help="HH:MM, the panel's time zone (needed the first time)")
    schedule.add_argument("--keep-last", metavar="N|none", help="keep the newest N scheduled backups (none: no count rule)")
    schedule.add_argument("--keep-days", metavar="N|none", help="keep scheduled backups N days (none: no age rule)")
    on_off = schedule.add_mutually_exclusive_group()
    on_off.add_argument("--on", action="store_true", help="turn it on (setting it does, unless --off)")
    on_off.add_argument("--off", action="store_true", help="turn it off (its time and limits are kept)")
    schedule.set_defaults(func=cmd_schedule, resource=resource)

    retention = sub.add_parser(
        "retention", help="how many checkpoints it keeps, and how long: shown, or changed by the options given", parents=[COMMON]
    )
    retention.add_argument("id", help="the sandbox's id or name")
    retention.add_argument("--keep-last", metavar="N|default", help="keep the newest N checkpoints (default: the panel's)")
    retention.add_argument("--keep-days", metavar="N|none", help="keep checkpoints N days (none: no age rule)")
    retention.set_defaults(func=cmd_retention, resource=resource)


def add_backup_verbs(sub, resource: Resource) -> None:
    download = sub.add_parser("download", help="download a backup's archive (operators), checked against its SHA-256", parents=[COMMON])
    download.add_argument("id", help="the backup's id")
    download.add_argument("-o", "--output", help="the file to write (- for standard output); its own file name if none")
    download.add_argument("--force", action="store_true", help="replace the file if it exists")
    download.set_defaults(func=cmd_backup_download, resource=resource)

    restore = sub.add_parser("restore", help="restore a backup: into its sandbox, or into a new one", parents=[COMMON])
    restore.add_argument("id", help="the backup's id")
    restore.add_argument("--into", choices=["self", "new"], default="new", help="its own sandbox (replacing its files) or a new one (new)")
    restore.add_argument("--name", help="--into new: the new sandbox's name")
    restore.add_argument("--team", help="--into new: the team (its id or name); the backup's own if none")
    restore.add_argument("--drop-outside-links", action="store_true", help="leave out links that point outside their folder")
    restore.add_argument("--yes", action="store_true", help="--into self: do not ask for the sandbox's name")
    restore.add_argument("--wait", action="store_true", help="wait until the restore is done (or failed)")
    restore.add_argument("--timeout", type=float, default=1800.0, help="seconds --wait waits (1800)")
    restore.set_defaults(func=cmd_backup_restore, resource=resource)

    verify = sub.add_parser("verify", help="check a backup's archive against its checksum and manifest", parents=[COMMON])
    verify.add_argument("id", help="the backup's id")
    verify.add_argument("--wait", action="store_true", help="wait for the verdict")
    verify.add_argument("--timeout", type=float, default=1800.0, help="seconds --wait waits (1800)")
    verify.set_defaults(func=cmd_backup_verify, resource=resource)

    for verb, what in (("cancel", "stop a backup being written"), ("delete", "delete a backup (admins)")):
        p = sub.add_parser(verb, help=what, parents=[COMMON])
        p.add_argument("id", help="the backup's id")
        p.set_defaults(func=cmd_backup_cancel if verb == "cancel" else cmd_delete, resource=resource)


def add_checkpoint_verbs(sub, resource: Resource) -> None:
    rollback = sub.add_parser("rollback", help="put its sandbox back to a checkpoint (what is there is kept as one)", parents=[COMMON])
    rollback.add_argument("id", help="the checkpoint's id")
    rollback.add_argument("--yes", action="store_true", help="do not ask for the sandbox's name")
    rollback.set_defaults(func=cmd_checkpoint_rollback, resource=resource)
    delete = sub.add_parser("delete", help="delete a checkpoint", parents=[COMMON])
    delete.add_argument("id", help="the checkpoint's id")
    delete.set_defaults(func=cmd_delete, resource=resource)


def _size(n) -> str:
    if not isinstance(n, int):
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return ""


def _verified(b: dict) -> str:
    return "" if b.get("verified_ok") is None else ("ok" if b["verified_ok"] else "FAILED")


def _when(text) -> str:
    return str(text or "")[:19].replace("T", " ")


RESOURCES = [
    Resource(
        name="sandbox",
        plural="sandboxes",
        path="/api/v1/sandboxes/",
        columns=[
            ("ID", lambda s: s["id"]),
            ("NAME", lambda s: s["name"]),
            ("TEAM", _team),
            ("HOST", lambda s: s.get("host", "")),
            ("STATUS", _status),
            ("NETWORK", lambda s: s.get("network_mode", "")),
            ("MEMORY", lambda s: f"{s['memory_mb']} MB" if "memory_mb" in s else ""),
            ("CPUS", lambda s: s.get("cpus", "")),
            ("IMAGE", lambda s: s.get("image", "")),
        ],
        filters=[
            Filter("--team", "team", "only this team's (its id, or its name)"),
            Filter("--status", "status", "only those in this status", SANDBOX_STATUSES),
            Filter("--host", "host", "only those on this host"),
            Filter("-q", "q", "only those whose name holds this"),
        ],
        add_verbs=add_sandbox_verbs,
    ),
    Resource(
        name="backup",
        path="/api/v1/backups/",
        columns=[
            ("ID", lambda b: b["id"]),
            ("SANDBOX", lambda b: b.get("sandbox_name", "")),
            ("TEAM", _team),
            ("KIND", lambda b: b.get("kind", "")),
            ("STATUS", lambda b: b.get("status", "")),
            ("SIZE", lambda b: _size(b.get("size_bytes"))),
            ("CREATED", lambda b: _when(b.get("created_at"))),
            ("VERIFIED", _verified),
        ],
        filters=[
            Filter("--sandbox", "sandbox", "only this sandbox's (its id or name)"),
            Filter("--team", "team", "only this team's (its id, or its name)"),
            Filter("--status", "status", "only those in this status", ["running", "done", "failed"]),
            Filter("--kind", "kind", "only those of this kind", ["manual", "scheduled", "pre-restore", "evidence", "imported"]),
        ],
        add_verbs=add_backup_verbs,
        by_name=False,
    ),
    Resource(
        name="checkpoint",
        path="/api/v1/checkpoints/",
        columns=[
            ("ID", lambda c: c["id"]),
            ("LABEL", lambda c: c.get("label", "")),
            ("SNAPSHOT", lambda c: c.get("snapshot", "")),
            ("AUTO", lambda c: "yes" if c.get("automatic") else ""),
            ("SIZE", lambda c: _size(c.get("size"))),
            ("CREATED", lambda c: _when(c.get("created_at"))),
        ],
        filters=[Filter("--sandbox", "sandbox", "the sandbox whose checkpoints to list (its id or name)", required=True)],
        add_verbs=add_checkpoint_verbs,
        by_name=False,
        paged=False,
    ),
]
SANDBOXES, BACKUPS, CHECKPOINTS = RESOURCES

# --- argument parsing ----------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """Usage errors end with 1 (refused by the client): 2 means "the panel could not be reached"."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_REFUSED, f"{self.prog}: error: {message}\n")


# Accepted before or after the verb (`ccpanel --json sandbox list`, `ccpanel sandbox list --json`).
COMMON = Parser(add_help=False)
COMMON.add_argument("--url", default=argparse.SUPPRESS, help="the panel, e.g. http://127.0.0.1:8000 (CCPANEL_URL)")
COMMON.add_argument("--token", default=argparse.SUPPRESS, help="an API token (CCPANEL_TOKEN; better in the environment or the config file)")
COMMON.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON, for programs")


def build_parser() -> Parser:
    parser = Parser(prog="ccpanel", description="The Claude Code sandbox panel, from the command line.", parents=[COMMON])
    parser.add_argument("--version", action="version", version=f"ccpanel {__version__}")
    resources = parser.add_subparsers(dest="resource_name", required=True, metavar="RESOURCE", parser_class=Parser)
    for resource in RESOURCES:
        r = resources.add_parser(resource.name, help=resource.many, parents=[COMMON])
        sub = r.add_subparsers(dest="verb", required=True, metavar="COMMAND", parser_class=Parser)
        listing = sub.add_parser("list", help=f"the {resource.many} you may see", parents=[COMMON])
        for f in resource.filters:
            listing.add_argument(f.flag, dest=f"filter_{f.param}", choices=f.choices, help=f.help, required=f.required)
        listing.set_defaults(func=cmd_list, resource=resource)
        show = sub.add_parser("show", help=f"one {resource.name}", parents=[COMMON])
        show.add_argument("id", help=f"the {resource.name}'s id" + (" or name" if resource.by_name else ""))
        show.set_defaults(func=cmd_show, resource=resource)
        if resource.add_verbs:
            resource.add_verbs(sub, resource)
    return parser


# --- output --------------------------------------------------------------------------------


def table(rows: list[dict], columns) -> str:
    cells = [[h for h, _ in columns]] + [["" if get(r) is None else str(get(r)) for _, get in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def details(obj: dict) -> str:
    def value(v):
        if isinstance(v, dict):
            return v.get("name", json.dumps(v)) if "name" in v else json.dumps(v)
        if isinstance(v, list):
            return ", ".join(value(x) for x in v) if v else "-"
        return "-" if v in ("", None) else str(v)

    width = max(len(k) for k in obj) if obj else 0
    return "\n".join(f"{k.ljust(width)}  {value(v)}" for k, v in obj.items())


# What a terminal acts on rather than shows: C0 controls but tab and newline, DEL, C1 controls
# (0x9b is a CSI of its own), and the bidirectional overrides that reorder what is read. Text
# from the panel (a sandbox's name or status detail, an error message, above all a log line the
# agent in the sandbox wrote) could otherwise set the window title, rewrite what is on screen,
# hide text, or on some terminals write the clipboard or answer back as if typed.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` with each control character written as its escape (`\\x1b`), shown, not acted on."""
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1] if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)


def visible_line(line: bytes) -> bytes:
    """A log line (bytes, ending in a newline or not) made safe for a terminal."""
    end = b"\n" if line.endswith(b"\n") else b""
    return visible(line[: len(line) - len(end)].decode("utf-8", "replace")).encode() + end


def emit(args, data: Any, human: Callable[[], str]) -> None:
    print(json.dumps(data, indent=2) if getattr(args, "json", False) else visible(human()))


def say(message: str) -> None:
    print(visible(message), file=sys.stderr, flush=True)


# --- commands ------------------------------------------------------------------------------


def find(api: Api, resource: Resource, ref: str) -> dict:
    """One object by id, or by its exact name (searched in the list); `id:N` is an id only. A
    name may be all digits (`42`): a number that is one object's id and another's name is
    refused as ambiguous, so `destroy 42` never acts on another sandbox than the one meant."""
    if ref.startswith("id:") and ref[3:].isdigit():
        return api.get(f"{resource.path}{ref[3:]}/")
    if ref.isdigit():
        try:
            found = api.get(f"{resource.path}{ref}/")
        except ClientError as exc:
            if exc.status != 404 or not resource.by_name or not any(s.get("name") == ref for s in api.pages(resource.path, q=ref)):
                raise
            return by_name(api, resource, ref)  # no such id, but a name
        if resource.by_name:
            named = [s for s in api.pages(resource.path, q=ref) if s.get("name") == ref and str(s.get("id")) != ref]
            if named:
                ids = ", ".join(f"id:{m['id']}" for m in named)
                raise ClientError(
                    f"{ref!r} is ambiguous: the id of one {resource.name}, the name of another ({ids}). Say which: id:{ref}, or {ids}."
                )
        return found
    if not resource.by_name:
        raise ClientError(f"Give the {resource.name}'s id (a number).")
    return by_name(api, resource, ref)


def by_name(api: Api, resource: Resource, ref: str) -> dict:
    matches = [s for s in api.pages(resource.path, q=ref) if s.get("name") == ref]
    if not matches:
        raise ClientError(f"No {resource.name} named {ref!r} (or not one you may see).")
    if len(matches) > 1:
        ids = ", ".join(f"{m['id']} ({_team(m)})" for m in matches)
        raise ClientError(f"{len(matches)} {resource.many} are named {ref!r}: give the id, one of {ids}.")
    return api.get(f"{resource.path}{matches[0]['id']}/")


def team_id(api: Api, ref: str) -> int:
    """A team's id: as given, or found by name among the teams of the sandboxes listed (the
    API has no teams list here yet)."""
    if ref.isdigit():
        return int(ref)
    for s in api.pages("/api/v1/sandboxes/"):
        team = s.get("team") or {}
        if isinstance(team, dict) and ref.lower() in (str(team.get("name", "")).lower(), str(team.get("slug", "")).lower()):
            return int(team["id"])
    raise ClientError(f"No team {ref!r} among your sandboxes' teams: give the team's id (a number).")


def cmd_list(api: Api, args) -> int:
    r: Resource = args.resource
    params = {f.param: getattr(args, f"filter_{f.param}") for f in r.filters}
    if params.get("team") and not str(params["team"]).isdigit():
        params["team"] = team_id(api, params["team"])
    if params.get("sandbox"):
        params["sandbox"] = find(api, SANDBOXES, str(params["sandbox"]))["id"]
    rows = list(api.pages(r.path, **params)) if r.paged else api.get(r.path, **params)
    emit(args, rows, lambda: table(rows, r.columns) if rows else f"No {r.many}.")
    return 0


def cmd_show(api: Api, args) -> int:
    obj = find(api, args.resource, args.id)
    emit(args, obj, lambda: details(obj))
    return 0


def memory_mb(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise ClientError(f"--memory: a number of MB, or with a unit (4g, 512m); not {text!r}.")
    number, unit = int(match.group(1)), match.group(2) or "m"
    return {"k": number // 1024, "m": number, "g": number * 1024, "t": number * 1024 * 1024}[unit]


def mount(text: str) -> dict:
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ClientError(f"--mount: HOST:CONTAINER or HOST:CONTAINER:ro; not {text!r}.")
    return {"host_path": parts[0], "container_path": parts[1], "read_only": len(parts) == 3 and parts[2] == "ro"}


def create_body(api: Api, args) -> dict:
    body: dict[str, Any] = {"team": team_id(api, args.team), "name": args.name}
    optional = {
        "image": args.image,
        "memory_mb": memory_mb(args.memory) if args.memory else None,
        "cpus": args.cpus,
        "disk_mb": args.disk_mb,
        "network_mode": args.network,
        "runtime": args.runtime,
        "host": args.host,
        "egress_presets": args.preset or None,
        "egress_allow": "\n".join(args.allow) if args.allow else None,
        "extra_mounts": [mount(m) for m in args.mount] or None,
        "writable_root": args.writable_root or None,
        "low_ports_and_ping": args.low_ports_and_ping or None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def cmd_create(api: Api, args) -> int:
    answer = api.post(args.resource.path, create_body(api, args))
    sandbox = answer["sandbox"]
    if not answer.get("queued", True):
        say(answer.get("reason", "Recorded, but its start was not queued."))
    else:
        say(f"Created {sandbox['name']} (id {sandbox['id']}); starting.")
    if args.wait and answer.get("queued", True):
        sandbox = wait(api, answer["url"], "running", timeout=args.timeout, what=f"{sandbox['name']} to start")
    emit(args, sandbox if args.wait else answer, lambda: details(sandbox))
    return 0 if answer.get("queued", True) else EXIT_REFUSED


def cmd_action(api: Api, args) -> int:
    sandbox = find(api, args.resource, args.id)
    body: dict[str, Any] = {}
    if args.action == "destroy":
        if args.yes:
            body["confirm_name"] = sandbox["name"]
        else:
            # As the page: the name typed, checked by the panel (a pipe may give it too).
            if sys.stdin.isatty():
                print(
                    f"This removes {visible(sandbox['name'])}'s container, home and workspace folder. Type its name to confirm: ",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
            body["confirm_name"] = sys.stdin.readline().strip()
    answer = api.post(f"{args.resource.path}{sandbox['id']}/{args.action}/", body)
    say(f"{args.action}: {sandbox['name']} (id {sandbox['id']}) — asked.")
    result = answer["sandbox"]
    if args.wait:
        result = wait(
            api, answer["url"], ACTION_ENDS.get(args.action, "any"), timeout=args.timeout, what=f"{args.action} of {sandbox['name']}"
        )
        if result is None:
            say(f"{sandbox['name']} is destroyed.")
            return 0
    emit(args, result, lambda: details(result))
    return 0


def wait(api: Api, url: str, expected: str | None, *, timeout: float, what: str) -> dict | None:
    """Poll the sandbox's URL until no action holds it; then it must be in `expected` (None: gone,
    "any": whatever the action left). ClientError when it failed or time ran out."""
    deadline = time.monotonic() + timeout
    delay = 0.25
    while True:
        try:
            sandbox = api.get(url)
        except ClientError as exc:
            if exc.status == 404 and expected is None:
                return None
            raise
        if not sandbox.get("pending_action") and sandbox.get("status") not in ("creating", "destroying"):
            if sandbox.get("status") == "error" or (expected not in ("any", None) and sandbox.get("status") != expected):
                detail = sandbox.get("status_detail") or "no reason given"
                raise ClientError(f"The {what} failed: {sandbox['name']} is {sandbox.get('status')}: {detail}")
            if expected is not None:
                return sandbox
        if time.monotonic() > deadline:
            raise ClientError(f"Gave up waiting for the {what} after {timeout:g} s: it is {_status(sandbox)}.")
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


STAMPED = re.compile(rb"(\S+) (stdout|stderr) (.*)", re.S)


def cmd_logs(api: Api, args) -> int:
    """The last lines; with -f, as they are written, until the sandbox stops. The panel ends a
    followed answer after a few minutes: it is asked again from the last line's stamp."""
    sandbox = find(api, args.resource, args.id)
    path = f"{args.resource.path}{sandbox['id']}/logs/"
    out = sys.stdout.buffer
    params: dict[str, Any] = {"tail": args.tail, "timestamps": 1, "follow": 1 if args.follow else None}
    while True:
        for line in api.lines(path, timeout=None if args.follow else 60, **params):
            match = STAMPED.fullmatch(line)
            if match:
                params["since"] = match.group(1).decode("ascii", "replace")
            shown = line if args.timestamps or not match else match.group(3)
            out.write(shown if args.raw else visible_line(shown))
            out.flush()
        if not args.follow:
            return 0
        try:
            now = api.get(f"{args.resource.path}{sandbox['id']}/")
        except ClientError as exc:
            if exc.status == 404:
                return 0  # destroyed meanwhile
            raise
        if now.get("status") != "running" or now.get("pending_action") in ("stop", "destroy", "pause"):
            return 0
        if "since" not in params:
            params["tail"] = 0  # no line came: only what is written from now on


# --- backups and checkpoints --------------------------------------------------------------


def poll(api: Api, url: str, done: Callable[[dict], bool], *, timeout: float, what: str) -> dict:
    """GET `url` until `done` says so; ClientError when time runs out."""
    deadline = time.monotonic() + timeout
    delay = 0.25
    while True:
        found = api.get(url)
        if done(found):
            return found
        if time.monotonic() > deadline:
            raise ClientError(f"Gave up waiting for the {what} after {timeout:g} s: it is {found.get('status', '?')}.")
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


def _backup_ended(api: Api, url: str, *, timeout: float, what: str) -> dict:
    backup = poll(api, url, lambda b: b.get("status") != "running", timeout=timeout, what=what)
    if backup.get("status") != "done":
        raise ClientError(f"The {what} failed: {backup.get('detail') or 'no reason given'}")
    return backup


def cmd_backup(api: Api, args) -> int:
    sandbox = find(api, args.resource, args.id)
    answer = api.post("/api/v1/backups/", {"sandbox": sandbox["id"]})
    backup = answer["backup"]
    say(f"Backing up {sandbox['name']} to {backup['file_name']} (backup {backup['id']}).")
    if args.wait:
        backup = _backup_ended(api, answer["url"], timeout=args.timeout, what=f"backup of {sandbox['name']}")
        say(f"Written: {_size(backup.get('size_bytes'))}, sha256 {backup.get('sha256', '')}.")
    emit(args, backup, lambda: details(backup))
    return 0


def _backup(api: Api, ref: str) -> dict:
    return find(api, BACKUPS, ref)


def _output(path: str, force: bool) -> str:
    if os.path.lexists(path) and not force:
        raise ClientError(f"{path} exists: give another -o, or --force to replace it.")
    return path


def _new_file(path: str, force: bool) -> BinaryIO:
    """`path`, made afresh for this process alone (readable by its owner only: a backup holds the
    sandbox's home): never a file or link already there, whose target would be written through
    (a link planted at FILE.part in a shared folder). With --force what is there goes first (a
    link itself, never what it names)."""
    if force and os.path.lexists(path) and not os.path.isdir(path):
        os.unlink(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0), 0o600)
    except FileExistsError:
        raise ClientError(f"{path} exists (a download that did not end?): remove it, or --force to replace it.") from None
    except OSError as exc:
        raise ClientError(f"Cannot write {path}: {exc.strerror}.") from None
    return os.fdopen(fd, "wb")


def cmd_backup_download(api: Api, args) -> int:
    backup = _backup(api, args.id)
    if backup.get("status") != "done":
        raise ClientError(f"Backup {backup['id']} is {backup.get('status')}: only a finished backup has a file.")
    url = f"{BACKUPS.path}{backup['id']}/download/"
    if args.output == "-":
        size, sha256 = api.download(url, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        # Its own name as the panel gave it, never a path: a name with a slash is not followed.
        given = os.path.basename(str(backup.get("file_name") or ""))
        target = _output(args.output or (given if given not in ("", ".", "..") else f"backup-{backup['id']}.tar.gz"), args.force)
        partial = f"{target}.part"
        out = _new_file(partial, args.force)
        try:
            with out:
                size, sha256 = api.download(url, out)
            if backup.get("sha256") and sha256 != backup["sha256"]:
                raise ClientError(f"The download's SHA-256 is {sha256}, not the backup's {backup['sha256']}: nothing was kept.")
            os.replace(partial, target)
        except OSError as exc:  # a full disk, a folder where the file goes: said, nothing kept
            raise ClientError(f"Cannot write {target}: {exc.strerror or exc}.") from None
        finally:
            if os.path.lexists(partial):
                os.unlink(partial)
        say(f"Wrote {target}: {_size(size)}, sha256 {sha256}.")
    if args.output == "-" and backup.get("sha256") and sha256 != backup["sha256"]:
        raise ClientError(f"The download's SHA-256 is {sha256}, not the backup's {backup['sha256']}.")
    return 0


def _confirm(name: str, yes: bool, prompt: str) -> str:
    """The name typed (as the page asks for it), or given with --yes; the panel checks it."""
    if yes:
        return name
    if sys.stdin.isatty():
        print(f"{prompt} Type its name to confirm: ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip()


def cmd_backup_restore(api: Api, args) -> int:
    backup = _backup(api, args.id)
    body: dict[str, Any] = {"into": args.into, "drop_outside_links": args.drop_outside_links}
    if args.into == "self":
        name = str(backup.get("sandbox_name", ""))
        body["confirm_name"] = _confirm(name, args.yes, f"This replaces {visible(name)}'s files with the backup's.")
    else:
        if not args.name:
            raise ClientError("--into new needs --name, the new sandbox's name.")
        body["new_name"] = args.name
        body["team"] = team_id(api, args.team) if args.team else (backup.get("team") or {}).get("id")
    answer = api.post(f"{BACKUPS.path}{backup['id']}/restore/", body)
    restore = answer["restore"]
    say(f"Restoring backup {backup['id']} (restore {restore['id']}).")
    if args.wait:
        restore = poll(api, answer["url"], lambda r: r.get("status") != "running", timeout=args.timeout, what="restore")
        if restore.get("status") != "done":
            raise ClientError(f"The restore {restore.get('status')}: {restore.get('detail') or 'no reason given'}")
    emit(args, restore, lambda: details(restore))
    return 0


def cmd_backup_verify(api: Api, args) -> int:
    backup = _backup(api, args.id)
    before = backup.get("verified_at")
    answer = api.post(f"{BACKUPS.path}{backup['id']}/verify/")
    say(f"Verifying backup {backup['id']}.")
    result = answer.get("backup", backup)
    if args.wait:
        result = poll(api, answer["url"], lambda b: b.get("verified_at") not in (None, before), timeout=args.timeout, what="verify")
        if not result.get("verified_ok"):
            emit(args, result, lambda: details(result))
            raise ClientError(f"Backup {backup['id']} failed its check: {result.get('verify_detail') or 'no reason given'}")
    emit(args, result, lambda: details(result))
    return 0


def cmd_backup_cancel(api: Api, args) -> int:
    backup = _backup(api, args.id)
    answer = api.post(f"{BACKUPS.path}{backup['id']}/cancel/")
    emit(args, answer, lambda: f"Backup {backup['id']}: cancel asked.")
    return 0


def cmd_delete(api: Api, args) -> int:
    r: Resource = args.resource
    obj = find(api, r, args.id)
    api.delete(f"{r.path}{obj['id']}/")
    emit(args, {"deleted": obj["id"]}, lambda: f"Deleted {r.name} {obj['id']}.")
    return 0


def cmd_checkpoint(api: Api, args) -> int:
    sandbox = find(api, args.resource, args.id)
    made = api.post(CHECKPOINTS.path, {"sandbox": sandbox["id"], "label": args.label})
    emit(args, made, lambda: details(made))
    return 0


def cmd_checkpoint_rollback(api: Api, args) -> int:
    checkpoint = find(api, args.resource, args.id)
    sandbox = api.get(f"{SANDBOXES.path}{checkpoint['sandbox']}/")
    typed = _confirm(sandbox["name"], args.yes, f"This puts {visible(sandbox['name'])} back to checkpoint {checkpoint['snapshot']}.")
    if typed != sandbox["name"]:
        raise ClientError(f"Not rolled back: type {sandbox['name']} exactly to confirm.")
    answer = api.post(f"{CHECKPOINTS.path}{checkpoint['id']}/rollback/")
    say(f"Rolled back; what was there is checkpoint {answer['before']['id']} ({answer['before']['snapshot']}).")
    emit(args, answer, lambda: details(answer["sandbox"]))
    return 0


def _limit(text: str | None, empty: str, flag: str) -> int | None | str:
    """An option's number; None for `empty` (none, default); "" when the option was not given."""
    if text is None:
        return ""
    if text.strip().lower() == empty:
        return None
    if not text.strip().isdigit():
        raise ClientError(f"{flag}: a whole number, or {empty}; not {text!r}.")
    return int(text)


def cmd_schedule(api: Api, args) -> int:
    sandbox = find(api, args.resource, args.id)
    url = f"{SANDBOXES.path}{sandbox['id']}/backup-schedule/"
    keep_last, keep_days = _limit(args.keep_last, "none", "--keep-last"), _limit(args.keep_days, "none", "--keep-days")
    if args.off:
        if args.at or keep_last != "" or keep_days != "":
            raise ClientError("--off turns it off and changes nothing else: give the other options without it.")
        api.delete(url)
    elif args.on or args.at or keep_last != "" or keep_days != "":
        now = api.get(url)
        at = args.at or now.get("at")
        if not at:
            raise ClientError(f"{sandbox['name']} has no daily backup yet: give --at HH:MM.")
        body = {
            "enabled": True,
            "at": at,
            "keep_last": now.get("keep_last") if keep_last == "" else keep_last,
            "keep_days": now.get("keep_days") if keep_days == "" else keep_days,
        }
        api.put(url, body)
    shown = api.get(url)
    emit(args, shown, lambda: details(shown) if shown.get("configured") else f"{sandbox['name']} has no daily backup.")
    return 0


def cmd_retention(api: Api, args) -> int:
    sandbox = find(api, args.resource, args.id)
    url = f"{SANDBOXES.path}{sandbox['id']}/checkpoint-retention/"
    keep_last, keep_days = _limit(args.keep_last, "default", "--keep-last"), _limit(args.keep_days, "none", "--keep-days")
    now = api.get(url)
    if keep_last != "" or keep_days != "":
        body = {
            "keep_last": now.get("keep_last") if keep_last == "" else keep_last,
            "keep_days": now.get("keep_days") if keep_days == "" else keep_days,
        }
        now = api.put(url, body)
        if now.get("removed"):
            say(f"{now['removed']} checkpoint(s) beyond the new rule went.")
    emit(args, now, lambda: details(now))
    return 0


def is_private(url: str) -> bool:
    """HTTPS, or HTTP to this machine: nobody on the way reads the token."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" or host == "localhost":
        return True
    try:  # a loopback address, not a name that only begins like one (127.panel.example)
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = resolve(getattr(args, "url", None), getattr(args, "token", None))
        if not is_private(settings.url):
            say(f"ccpanel: warning: {settings.url} is plain HTTP to another machine: the token crosses the network readable.")
        return args.func(Api(settings.url, settings.token), args)
    except ClientError as exc:
        say(f"ccpanel: {exc}")
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ccpanel sandbox logs ID | head`
        return 0
