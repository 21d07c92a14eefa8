"""A team's resource policy (TeamPolicy): what its sandboxes may take of the machine together.

`check_create` is called by every create (sandboxes.services.create: the form, the CLI, a
restore into a new sandbox) inside the transaction that saves the sandbox, with the team's row
locked, so two creates for one team are judged one after the other and cannot both take the
last place. `check_change` is the same judgement for a sandbox whose limits grow later (the
disk quota, changeable once the storage pool lands). `policy_set` is how a superuser changes a
policy (the admin and the team's page both call it), audited.

Lowering a policy below what a team already uses is allowed: its sandboxes keep running, and
creates (and changes that would take more) are refused until it is back under the limit.
"""

from dataclasses import asdict, dataclass
from decimal import Decimal

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Sum

from .models import Team, TeamPolicy
from .permissions import Role, SystemActor, authorize_cap
from .services import TeamError, audit_team

FIELDS = ("max_sandboxes", "max_memory_mb", "max_cpus", "max_disk_mb", "default_disk_mb", "idle_minutes", "idle_cpu_percent")


class OverLimit(TeamError):
    """A create or change that the team's policy refuses. `errors` maps the form field it is
    about ("" for the number of sandboxes) to messages that name the limit."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__(" ".join(m for msgs in errors.values() for m in msgs))


@dataclass(frozen=True)
class Usage:
    """What a team's sandboxes that are not destroyed hold: how many, and their limits summed."""

    sandboxes: int
    memory_mb: int
    cpus: Decimal
    disk_mb: int


def disk_of(sandbox) -> int | None:
    """The disk quota (MB) a sandbox was given, or None (a sandbox made before quotas)."""
    return sandbox.disk_mb


def counted_disk_mb(disk_mb: int | None, policy: TeamPolicy | None) -> int:
    """What a sandbox's disk counts for in its team's total: its own quota, else the team's
    default quota (which a disk total requires, see `problems`), else nothing."""
    if disk_mb is not None:
        return disk_mb
    return (policy.default_disk_mb if policy else None) or 0


def default_disk_mb(team: Team) -> int | None:
    """The quota a new sandbox of `team` gets when it names none: the team's default, or None
    (the pool's own default)."""
    return TeamPolicy.objects.filter(team_id=team.pk).values_list("default_disk_mb", flat=True).first()


def usage(team: Team, *, exclude: int | None = None, policy: TeamPolicy | None = None) -> Usage:
    """What `team`'s sandboxes hold now (without sandbox `exclude`). Every status but destroyed
    counts: a stopped sandbox may be started again at any time, and must find its room."""
    from sandboxes.models import Sandbox  # sandboxes depends on teams, not the other way round

    rows = Sandbox.objects.filter(team_id=team.pk).exclude(status=Sandbox.Status.DESTROYED)
    if exclude is not None:
        rows = rows.exclude(pk=exclude)
    totals = rows.aggregate(n=Count("pk"), memory=Sum("memory_mb"), cpus=Sum("cpus"))
    disk = sum(counted_disk_mb(disk_of(s), policy) for s in rows) if policy is not None else 0
    return Usage(totals["n"], totals["memory"] or 0, Decimal(totals["cpus"] or 0), disk)


def _lock(team: Team) -> TeamPolicy | None:
    """Lock the team's row until the transaction ends (PostgreSQL: FOR UPDATE; SQLite's write
    transactions are serial already, BEGIN IMMEDIATE) and read its policy under that lock."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("check the team's policy inside the transaction that saves the sandbox")
    Team.objects.select_for_update().filter(pk=team.pk).values_list("pk", flat=True).first()
    return TeamPolicy.objects.filter(team_id=team.pk).first()


def _n(value) -> str:
    """A number of CPUs as people write it: 2, 2.5, never 2.00 or 2E+1."""
    return f"{Decimal(str(value)).normalize():f}"


def _over(team: Team, policy: TeamPolicy, used: Usage, *, memory_mb, cpus, disk_mb, change: bool) -> dict[str, list[str]]:
    """The limits that `used` plus the asked amounts would pass (None: that amount is not asked)."""
    errors: dict[str, list[str]] = {}
    asks = "this change asks for" if change else "this one asks for"
    if memory_mb is not None and policy.max_memory_mb is not None and used.memory_mb + memory_mb > policy.max_memory_mb:
        errors["memory_mb"] = [
            f"Team '{team}' allows at most {policy.max_memory_mb} MB of memory in total; "
            f"its sandboxes have {used.memory_mb} MB and {asks} {memory_mb} MB."
        ]
    if cpus is not None and policy.max_cpus is not None and used.cpus + Decimal(str(cpus)) > policy.max_cpus:
        errors["cpus"] = [
            f"Team '{team}' allows at most {_n(policy.max_cpus)} CPUs in total; its sandboxes have {_n(used.cpus)} and {asks} {_n(cpus)}."
        ]
    if disk_mb is not None and policy.max_disk_mb is not None and used.disk_mb + disk_mb > policy.max_disk_mb:
        errors["disk_mb"] = [
            f"Team '{team}' allows at most {policy.max_disk_mb} MB of disk in total; "
            f"its sandboxes have {used.disk_mb} MB and {asks} {disk_mb} MB."
        ]
    return errors


def check_create(*, team: Team, memory_mb: int, cpus: Decimal, disk_mb: int | None = None, exclude: int | None = None) -> None:
    """Raise OverLimit, naming each limit passed, if `team` may not have one more sandbox with
    these limits (`disk_mb` None: the team's default quota). `exclude`: a sandbox not to count
    (one being made again under the same team). Call inside the transaction that saves it."""
    policy = _lock(team)
    if policy is None:
        return
    used = usage(team, exclude=exclude, policy=policy)
    errors: dict[str, list[str]] = {}
    if policy.max_sandboxes is not None and used.sandboxes + 1 > policy.max_sandboxes:
        errors[""] = [f"Team '{team}' allows at most {policy.max_sandboxes} sandboxes; it has {used.sandboxes}."]
    errors.update(_over(team, policy, used, memory_mb=memory_mb, cpus=cpus, disk_mb=counted_disk_mb(disk_mb, policy), change=False))
    if errors:
        raise OverLimit(errors)


def check_change(*, sandbox, memory_mb: int | None = None, cpus: Decimal | None = None, disk_mb: int | None = None) -> None:
    """Raise OverLimit if changing `sandbox`'s limits to these (None: unchanged) would take its
    team past a limit. Only what grows is judged: shrinking a sandbox is always allowed, even in
    a team above a lowered limit. Call inside the transaction that saves the change."""
    policy = _lock(sandbox.team)
    if policy is None:
        return
    grows_memory = memory_mb if memory_mb is not None and memory_mb > sandbox.memory_mb else None
    grows_cpus = cpus if cpus is not None and Decimal(str(cpus)) > Decimal(str(sandbox.cpus)) else None
    old_disk = counted_disk_mb(disk_of(sandbox), policy)
    grows_disk = disk_mb if disk_mb is not None and disk_mb > old_disk else None
    used = usage(sandbox.team, exclude=sandbox.pk, policy=policy)
    if errors := _over(sandbox.team, policy, used, memory_mb=grows_memory, cpus=grows_cpus, disk_mb=grows_disk, change=True):
        raise OverLimit(errors)


def problems(values: dict) -> dict[str, list[str]]:
    """What is wrong with a policy as a whole (each number's own range is the model's)."""
    errors: dict[str, list[str]] = {}
    if (values.get("idle_minutes") is None) != (values.get("idle_cpu_percent") is None):
        errors["idle_minutes"] = ["The idle rule needs both the minutes and the CPU threshold (or neither, to leave it off)."]
    if values.get("max_disk_mb") is not None and values.get("default_disk_mb") is None:
        # A sandbox that names no quota must count for something, or a disk total means nothing.
        errors["default_disk_mb"] = ["A total disk limit needs a default disk quota: a sandbox given none counts as the default."]
    if values.get("max_disk_mb") is not None and values.get("default_disk_mb") is not None:
        if values["default_disk_mb"] > values["max_disk_mb"]:
            errors["default_disk_mb"] = ["The default disk quota cannot be larger than the team's total disk."]
    return errors


def over_now(team: Team, policy: TeamPolicy) -> list[str]:
    """The limits `team` is already above (after a policy was lowered), in words."""
    used = usage(team, policy=policy)
    found = []
    if policy.max_sandboxes is not None and used.sandboxes > policy.max_sandboxes:
        found.append(f"{used.sandboxes} sandboxes (limit {policy.max_sandboxes})")
    if policy.max_memory_mb is not None and used.memory_mb > policy.max_memory_mb:
        found.append(f"{used.memory_mb} MB of memory (limit {policy.max_memory_mb})")
    if policy.max_cpus is not None and used.cpus > policy.max_cpus:
        found.append(f"{_n(used.cpus)} CPUs (limit {_n(policy.max_cpus)})")
    if policy.max_disk_mb is not None and used.disk_mb > policy.max_disk_mb:
        found.append(f"{used.disk_mb} MB of disk (limit {policy.max_disk_mb})")
    return found


def _plain(policy: TeamPolicy | None) -> dict:
    return {f: (None if policy is None or getattr(policy, f) is None else str(getattr(policy, f))) for f in FIELDS}


def policy_set(*, actor, team: Team, values: dict, source_ip: str | None = None) -> tuple[TeamPolicy, list[str]]:
    """Set `team`'s policy to `values` (every field of FIELDS; None: no limit). Superusers only:
    a team admin must not raise their own team's share of the machine. Returns the policy and
    the limits the team is already above (its sandboxes keep running; creates are refused)."""
    if not isinstance(actor, SystemActor) and not getattr(actor, "is_superuser", False):
        raise PermissionDenied("Only a superuser sets a team's resource policy.")
    authorize_cap(Role.ADMIN)  # an API token narrower than admin sets no policy, a superuser's neither
    values = {f: values.get(f) for f in FIELDS}
    if errors := problems(values):
        raise ValidationError(errors)
    with transaction.atomic():
        Team.objects.select_for_update().filter(pk=team.pk).values_list("pk", flat=True).first()
        policy = TeamPolicy.objects.filter(team_id=team.pk).first()
        before = _plain(policy)
        policy = policy or TeamPolicy(team=team)
        for name, value in values.items():
            setattr(policy, name, value)
        policy.full_clean()  # each number's range: negative or absurd values never reach the row
        policy.save()
        after = _plain(policy)
        over = over_now(team, policy)
        if before != after:
            changed = {f: {"from": before[f], "to": after[f]} for f in FIELDS if before[f] != after[f]}
            audit_team(actor, "team.policy_set", team, {"changed": changed, "over": over}, source_ip)
    return policy, over


def summary(team: Team) -> dict:
    """The policy and what the team uses, for its page."""
    policy = TeamPolicy.objects.filter(team_id=team.pk).first()
    used = asdict(usage(team, policy=policy))
    used["cpus"] = _n(used["cpus"])
    return {
        "policy": policy,
        "usage": used,
        "max_cpus": _n(policy.max_cpus) if policy and policy.max_cpus is not None else None,
        "idle_cpu_percent": _n(policy.idle_cpu_percent) if policy and policy.idle_cpu_percent is not None else None,
        "over": over_now(team, policy) if policy else [],
    }
