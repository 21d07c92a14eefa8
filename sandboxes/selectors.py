"""Reads, always limited to what the given user may see."""

import dataclasses
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from django.http import Http404
from django.utils import timezone

from hosts.selectors import host_count

from . import activity, engine, health, managed_settings, policy
from .models import EgressDenial, Sandbox
from .secrets import LABEL_SECRETS
from .services import warm

PAGE_TIMEOUT = 5  # seconds a page waits for Docker: a hung engine must not hold a request


def sandbox_list_visible(*, user, include_destroyed: bool = False) -> QuerySet[Sandbox]:
    sandboxes = Sandbox.objects.select_related("team")
    if not include_destroyed:
        sandboxes = sandboxes.exclude(status=Sandbox.Status.DESTROYED)
    if getattr(user, "is_superuser", False):
        return sandboxes
    return sandboxes.filter(team__memberships__user=user).distinct()


def files_changed(sandbox: Sandbox, window: str) -> tuple[activity.Activity, list[dict], str]:
    """The Files card (the page's and the API's): files modified in the sandbox's folders within
    `window` (activity.WINDOWS; read on the host), and what changed in its container's own file
    system (`docker diff`, 500 at most) with why that could not be read ("" when it could)."""
    found = activity.recent_files(sandbox, within_seconds=activity.WINDOWS[window])
    diff, diff_error = [], ""
    if sandbox.container_id and not health.docker_is_down():
        try:
            diff = engine.engine_for(sandbox, timeout=PAGE_TIMEOUT).diff(sandbox.container_id)[:500]
        except engine.EngineError as exc:
            diff_error = str(exc)
    return found, diff, diff_error


def sandbox_get_visible(*, user, pk: int) -> Sandbox | None:
    return sandbox_list_visible(user=user).filter(pk=pk).first()


def visible_sandbox_or_404(*, user, pk: int) -> Sandbox:
    """The sandbox a page is about, if the user may see it (destroyed ones are gone); otherwise
    404, the same answer as for a sandbox that never existed, so pages reveal nothing."""
    sandbox = sandbox_get_visible(user=user, pk=pk)
    if sandbox is None:
        raise Http404("No such sandbox.")
    return sandbox


class SandboxPage:
    """One page of the dashboard, like Django's Page, but counting only when it must: a page
    that is the first and holds fewer rows than fit needs no COUNT query."""

    def __init__(self, queryset: QuerySet[Sandbox], number: int, size: int):
        rows = list(queryset[(number - 1) * size : number * size + 1])
        self.number = number
        self.object_list = rows[:size]
        self._has_next = len(rows) > size
        self._count = len(rows) if number == 1 and not self._has_next else None
        self._queryset = queryset
        self.size = size

    def __iter__(self):
        return iter(self.object_list)

    @property
    def count(self) -> int:
        if self._count is None:
            self._count = self._queryset.count()
        return self._count

    @property
    def num_pages(self) -> int:
        return max(1, -(-self.count // self.size))

    def has_next(self) -> bool:
        return self._has_next

    def has_previous(self) -> bool:
        return self.number > 1

    def has_other_pages(self) -> bool:
        return self._has_next or self.number > 1

    def next_page_number(self) -> int:
        return self.number + 1

    def previous_page_number(self) -> int:
        return self.number - 1


# The columns of a dashboard row, read by the page (as model objects) and by the API's list (as
# values: api.serializers.sandbox_rows); the joined ones say whether its host answers (hosts.health).
ROW_COLUMNS = (
    "name",
    "status",
    "pending_action",
    "on_hold",
    "status_detail",
    "image",
    "memory_mb",
    "cpus",
    "network_mode",
    "checklist_failed",
    "health",
    "oom_kills",
    "team_id",
    "team__name",
    "host_id",
    "host__name",
    "host__last_heartbeat",
    "host__last_error",
)
LIST_VALUES = ("id", *ROW_COLUMNS)


def sandbox_page(
    *,
    user,
    roles: dict[int, str],
    search: str = "",
    page: int | str | None = None,
    team_id: int | None = None,
    status: str = "",
    host: str = "",
    values: bool = False,
) -> SandboxPage:
    """One page of the dashboard: SANDBOX_PAGE_SIZE sandboxes, by name, filtered by `search`
    (and, for the API, by team, status and host name). `roles` (teams.permissions.team_roles)
    says which teams' sandboxes the user sees. `values`: the rows as dicts of LIST_VALUES (the
    API's list: no model objects made)."""
    sandboxes = (
        Sandbox.objects.select_related("team", "host")
        .exclude(status=Sandbox.Status.DESTROYED)
        .annotate(host_count=host_count())  # the host is named only when there are several
        # The row's health and OOM badges (sandboxes.rows) among them: deferred, each cost a query per row.
        .only("pk", *ROW_COLUMNS, "oom_last_at", "oom_since")
    )
    if not getattr(user, "is_superuser", False):
        sandboxes = sandboxes.filter(team_id__in=list(roles))
    if search:
        sandboxes = sandboxes.filter(name__icontains=search.strip())
    if team_id is not None:
        sandboxes = sandboxes.filter(team_id=team_id)
    if status:
        sandboxes = sandboxes.filter(status=status)
    if host:
        sandboxes = sandboxes.filter(host__name=host)
    if values:
        sandboxes = sandboxes.values(*LIST_VALUES)  # type: ignore[assignment]
    try:
        number = max(1, int(page or 1))
    except (TypeError, ValueError):
        number = 1
    return SandboxPage(sandboxes, number, settings.SANDBOX_PAGE_SIZE)


def hardening_report(sandbox: Sandbox) -> list[tuple[str, bool, str]]:
    """The policy read back from Docker and the kernel for the container that runs as this
    sandbox: its recorded container, or any other that carries its name or identity (one made
    by hand outside the panel is reported, and flagged). Empty when no container exists."""
    docker = engine.engine_for(sandbox, timeout=PAGE_TIMEOUT)
    claiming = docker.containers_claiming(name=sandbox.container_name, sandbox_uuid=str(sandbox.uuid))
    if not claiming:
        return []
    inspected = {cid: docker.inspect_container(cid) for cid in claiming}
    # Report on what runs (a stranger that runs matters more than the panel's stopped container).
    shown = sorted(claiming, key=lambda cid: (not inspected[cid]["State"].get("Running"), cid != sandbox.container_id))[0]
    data = inspected[shown]
    processes = docker.process_privileges(shown) if data["State"].get("Running") else None
    strangers = [cid[:12] for cid in claiming if cid != sandbox.container_id]
    report = [
        (
            "Only the panel's own container claims this sandbox",
            not strangers,
            f"also {', '.join(strangers)}" if strangers else (sandbox.container_id or "")[:12],
        )
    ]
    # Read without decrypting any secret (a page never needs a value); a secret changed since the
    # start is not a drift from the policy: the next start hands it over.
    # Nor is a team's policy for Claude Code changed since (the checklist says which one it has):
    # the file is compared as it was given, still read-only.
    spec = warm.running_spec(sandbox, secrets=False)
    given = next((m.get("Source") or "" for m in data.get("Mounts") or [] if m.get("Destination") == policy.MANAGED_SETTINGS_TARGET), "")
    labels = {k: v for k, v in spec.labels.items() if k not in (LABEL_SECRETS, managed_settings.LABEL)}
    spec = dataclasses.replace(spec, labels=labels, managed_settings=given)
    return report + policy.inspect_report(data, spec, processes)


def open_incident(sandbox: Sandbox):
    """The incident holding the sandbox, if one is open (read through the related name, so the
    sandboxes app does not import the incidents app)."""
    if not sandbox.on_hold:
        return None
    return sandbox.incidents.exclude(step="close", state="done").first()  # type: ignore[attr-defined]


# --- the decision log ------------------------------------------------------------------------------

DENIAL_WINDOWS = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}


def egress_denials(*, sandbox: Sandbox, search: str = "", protocol: str = "", since: str = "", grouped: bool = False) -> QuerySet:
    """The sandbox's refused attempts, newest first, narrowed by `search` (the start of an
    address, part of a name, or a port), a protocol and a time window (DENIAL_WINDOWS; all kept
    when empty). `grouped`: one row per destination (an address, or a refused name), the latest
    first, with its attempts, entries, ports and when it was first and last refused."""
    rows = EgressDenial.objects.filter(sandbox=sandbox, allowed=False)  # the decision stream has the allowed ones
    if search:
        match = Q(destination__startswith=search) | Q(name__icontains=search)
        if search.isdecimal() and len(search) <= 5:
            match |= Q(port=int(search))
        rows = rows.filter(match)
    if protocol:
        rows = rows.filter(protocol=protocol)
    if since in DENIAL_WINDOWS:
        rows = rows.filter(at__gte=timezone.now() - DENIAL_WINDOWS[since])
    if not grouped:
        return rows.order_by("-at", "-pk")
    return (
        rows.values("destination", "name")
        .annotate(
            attempts=Sum("count"),
            entries=Count("pk"),
            ports=Count("port", distinct=True),
            low_port=Min("port"),
            high_port=Max("port"),
            first=Min("at"),
            last=Max("at"),
        )
        .order_by("-last", "destination", "name")
    )
