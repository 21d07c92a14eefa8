"""What a page shows of a sandbox, computed once in Python so that the templates only print it:
the dashboard renders up to 50 of these per request, and the live path renders one per event,
with the same partial (_row.html, _panel.html).

The buttons are exactly the actions the services would accept from the viewer now
(services.allowed_actions), so a page never offers what the service refuses, nor hides what it
allows. They are small forms, built here with every value escaped (html.escape, as the template engine
would): building them in the template engine cost more than the rest of the row together.
"""

import json
from dataclasses import dataclass
from functools import cache
from html import escape

from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from hosts.health import unreachable_reason
from teams.permissions import Role, role_allows

from .models import Sandbox
from .network.allowlist import PRESETS
from .services import allowed_actions
from .services.reconcile import OOM_RECENT

# The row and panel buttons; Destroy has its own confirmation form on the sandbox's page.
BUTTONS = [a for a in Sandbox.Action.values if a != Sandbox.Action.DESTROY]
CONFIRM: dict[str, str] = {
    Sandbox.Action.RESET: "Reset {name}? The container and its running processes are removed; files and the home volume are kept.",
    Sandbox.Action.CLEAN: "Clean {name}? The container, its images and snapshots are removed; files and the home volume are kept.",
}


@dataclass(frozen=True)
class Row:
    """A sandbox as a row or a panel shows it: flat values, looked up once."""

    sandbox: Sandbox
    pk: int
    name: str
    status: str
    status_label: str
    pending: str
    on_hold: bool
    detail: str
    image: str
    network: str
    team: str
    url: str
    memory: str
    cpus: str
    view_only: bool
    actions: tuple[str, ...]
    buttons: SafeString
    can_destroy: bool
    can_open_terminal: bool
    checklist_failed: int | None = None
    # What Docker sees beside the status: the health check's state and recent OOM kills (badges).
    signals: SafeString = mark_safe("")
    # Its host's name, only when the panel has more than one host (else "": no column).
    host: str = ""
    # The allowlist presets the panel offers, (key, (label, entries)): the detail panel's form.
    allowlist_presets: tuple = tuple(PRESETS.items())


STATUS_LABELS = dict(Sandbox.Status.choices)
UNREACHABLE = "unreachable"  # shown, never stored: the sandbox's host does not answer
NETWORK_LABELS = dict(Sandbox.Network.choices)


def memory_label(mb: int) -> str:
    return f"{mb / 1024:g} GB" if mb >= 1024 and mb % 256 == 0 else f"{mb} MB"


def cpus_label(cpus) -> str:
    return f"{float(cpus):g}"


def _buttons(sandbox: Sandbox, url: str, actions: list[str], csrf: str, back_to_detail: bool) -> SafeString:
    back = '<input type="hidden" name="next" value="detail">' if back_to_detail else ""
    token = escape(csrf)
    html = []
    for a in actions:
        confirm = f' onclick="return confirm({escape(_js_string(CONFIRM[a].format(name=sandbox.name)))})"' if a in CONFIRM else ""
        html.append(
            f'<form method="post" action="{escape(url)}{a}/" class="inline">'
            f'<input type="hidden" name="csrfmiddlewaretoken" value="{token}">{back}'
            f'<button type="submit" name="action" value="{a}"{confirm}>{a.capitalize()}</button></form>'
        )
    return mark_safe("".join(html))  # noqa: S308 - every value above is escaped


def _js_string(text: str) -> str:
    """A JavaScript string literal for an attribute (escaped for HTML by the caller): JSON
    escapes quotes, backslashes and every control character."""
    return json.dumps(text)


@cache
def _detail_prefix() -> str:
    """The sandbox pages' URL up to the id: "/sandboxes/" (urls.py puts the id last)."""
    return reverse("sandbox_detail", args=[0])[: -len("0/")]


HEALTH_BADGES = {"healthy": "ok", "starting": "warn", "unhealthy": "bad"}


def _signals(sandbox: Sandbox) -> SafeString:
    """The health check's state (of a container that is up) and a streak of OOM kills that is
    still recent: a container can look "running" while nothing in it gets to run."""
    html = []
    if sandbox.health and sandbox.status in (Sandbox.Status.RUNNING, Sandbox.Status.PAUSED):
        cls = HEALTH_BADGES.get(sandbox.health, "bad")
        title = "The image's health check, as Docker reports it"
        html.append(f'<span class="badge {cls}" title="{escape(title)}">health: {escape(sandbox.health)}</span>')
    now = timezone.now()
    if sandbox.oom_kills and sandbox.oom_last_at and sandbox.oom_since and now - sandbox.oom_last_at < OOM_RECENT:
        since, last = timezone.localtime(sandbox.oom_since), timezone.localtime(sandbox.oom_last_at)
        title = (
            f"The kernel killed {sandbox.oom_kills} process(es) of this sandbox for want of memory "
            f"(its limit is {memory_label(sandbox.memory_mb)}); the last at {last:%H:%M:%S}."
        )
        html.append(f'<span class="badge bad" title="{escape(title)}">OOM-killed {int(sandbox.oom_kills)}× since {since:%H:%M}</span>')
    return mark_safe(" ".join(html))  # noqa: S308 - every value above is escaped


def row_for(sandbox: Sandbox, role: str | None, *, csrf: str, back_to_detail: bool = False) -> Row:
    url = f"{_detail_prefix()}{int(sandbox.pk)}/"
    allowed = allowed_actions(sandbox, role=role)
    actions = [a for a in BUTTONS if a in allowed]
    # Its host does not answer: shown so, its own status kept for when it does (hosts.health).
    away = unreachable_reason(sandbox.host)
    return Row(
        sandbox=sandbox,
        pk=sandbox.pk,
        name=sandbox.name,
        status=UNREACHABLE if away else sandbox.status,
        status_label="unreachable" if away else STATUS_LABELS.get(sandbox.status, sandbox.status),
        pending=sandbox.pending_action,
        on_hold=sandbox.on_hold,
        detail=f"{away} It was {sandbox.status} when last seen." if away else sandbox.status_detail,
        image=sandbox.image,
        network=NETWORK_LABELS.get(sandbox.network_mode, sandbox.network_mode),
        team=sandbox.team.name,
        url=url,
        memory=memory_label(sandbox.memory_mb),
        cpus=cpus_label(sandbox.cpus),
        view_only=role == Role.VIEWER,
        actions=tuple(actions),
        buttons=_buttons(sandbox, url, actions, csrf, back_to_detail),
        can_destroy=Sandbox.Action.DESTROY in allowed,
        can_open_terminal=role_allows(role, Role.OPERATOR) and not away,
        checklist_failed=sandbox.checklist_failed,
        signals=_signals(sandbox),
        host=sandbox.host.name if (getattr(sandbox, "host_count", None) or 0) > 1 else "",
    )


def rows_for(sandboxes, roles: dict[int, str], *, csrf: str) -> list[Row]:
    return [row_for(s, roles.get(s.team_id), csrf=csrf) for s in sandboxes]


def render_row(row: Row, *, oob: bool = False, insert: bool = False) -> SafeString:
    """A dashboard row: the one partial that both the page and the live path render. Written in
    Python with every value escaped: the dashboard renders up to 50 per request, and the
    template engine cost more per row than the rest of the request together."""
    e = escape
    pending = f' <span class="pending" title="in progress">⟳ {e(row.pending)}…</span>' if row.pending else ""
    if row.on_hold:
        pending += ' <span class="badge bad" title="An open incident holds this sandbox">incident</span>'
    if row.signals:
        pending += f" {row.signals}"
    detail = f'<div class="detail">{e(row.detail)}</div>' if row.detail else ""
    link = f'href="{e(row.url)}#checklist-card" title="Security checklist"'
    if row.checklist_failed:
        pending += f' <a class="badge bad" {link}>checklist: {int(row.checklist_failed)} failing</a>'
    elif row.checklist_failed == 0:
        pending += f' <a class="badge ok" {link}>checklist ok</a>'
    actions = '<span class="hint">view only</span>' if row.view_only else row.buttons
    swap = ' hx-swap-oob="true"' if oob and not insert else ""
    host_cell = f'<td class="host">{e(row.host)}</td>' if row.host else ""  # only with several hosts
    html = (
        f'<tr id="sandbox-{int(row.pk)}"{swap} data-name="{e(row.name)}" data-status="{e(row.status)}" data-pending="{e(row.pending)}">'
        f'<td><a href="{e(row.url)}">{e(row.name)}</a></td>'
        f'<td><span class="status status-{e(row.status)}">{e(row.status_label)}</span>{pending}{detail}</td>'
        f"<td><code>{e(row.image)}</code></td><td>{e(row.memory)}</td><td>{e(row.cpus)}</td><td>{e(row.network)}</td>"
        f'{host_cell}<td>{e(row.team)}</td><td class="usage" data-usage="{int(row.pk)}"></td><td class="actions">{actions}</td></tr>'
    )
    if insert:
        html = f'<tbody hx-swap-oob="beforeend:#sandbox-rows">{html}</tbody>'
    return mark_safe(html)  # noqa: S308 - every value above is escaped


def render_rows(rows: list[Row]) -> SafeString:
    return mark_safe("\n".join(render_row(r) for r in rows))  # noqa: S308 - each row escapes its values
