"""Teams and the roles of their members. Every sandbox belongs to exactly one team, and every
read and write of a sandbox is authorised by the reader's role in it (teams.permissions)."""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

# Bounds for what a superuser may type: generous, but inside every database's integer range.
MAX_MB = 2**31 - 1
MAX_CPUS = 10_000
MAX_IDLE_PERCENT = 51_200  # 512 CPUs (a sandbox's most) at 100 % each


class Team(models.Model):
    """A group of people sharing sandboxes."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True)
    # Every member must sign in with a second factor (TOTP): see teams.second_factor.
    require_second_factor = models.BooleanField(default=False)
    # The team's allowlist: entries (as a sandbox's own list) in force for every allowlist-mode
    # sandbox of the team besides its own; set by the team's admins (sandboxes.services.allowlist).
    egress_allow = models.TextField(blank=True, default="", db_default="")  # a DB default: older code makes teams too

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's role in a team: viewers read, operators drive sandboxes (start, stop, pause,
    reset, clean), team admins also destroy them and manage the team's members."""

    class Role(models.TextChoices):
        VIEWER = "viewer"
        OPERATOR = "operator"
        ADMIN = "admin"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.OPERATOR)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="one_membership_per_team")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class TeamPolicy(models.Model):
    """What a team's sandboxes may take of the machine, set by a superuser (teams.policy):
    how many sandboxes, how much memory, CPU and disk in total, the disk quota a sandbox gets
    when it names none, and the idle rule. Every field empty means "no limit" (or, for the idle
    rule, "off"): a team without a policy row has no limits at all.

    Sandboxes that are not destroyed count, whatever their status: a stopped sandbox keeps its
    claim on memory and CPUs, since Start must not then fail for want of room."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="policy")
    max_sandboxes = models.PositiveIntegerField(null=True, blank=True, validators=[MaxValueValidator(10_000)])
    max_memory_mb = models.PositiveIntegerField(null=True, blank=True, validators=[MaxValueValidator(MAX_MB)])
    max_cpus = models.DecimalField(
        max_digits=7, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(Decimal(0)), MaxValueValidator(MAX_CPUS)]
    )
    max_disk_mb = models.PositiveIntegerField(null=True, blank=True, validators=[MaxValueValidator(MAX_MB)])
    default_disk_mb = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(MAX_MB)])
    # The idle rule: a running sandbox with no terminal open and CPU under `idle_cpu_percent`
    # (percent of one CPU, as the stats chart shows it) for `idle_minutes` is stopped. Both set,
    # or the rule is off.
    idle_minutes = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(7 * 24 * 60)])
    idle_cpu_percent = models.DecimalField(
        max_digits=7,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.01")), MaxValueValidator(MAX_IDLE_PERCENT)],
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "team policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(idle_minutes__isnull=True, idle_cpu_percent__isnull=True)
                | Q(idle_minutes__isnull=False, idle_cpu_percent__isnull=False),
                name="team_idle_rule_whole_or_off",
            ),
            models.CheckConstraint(condition=Q(max_cpus__isnull=True) | Q(max_cpus__gte=0), name="team_max_cpus_not_negative"),
        ]

    def __str__(self) -> str:
        return f"policy of {self.team}"

    @property
    def idle_rule_on(self) -> bool:
        return self.idle_minutes is not None and self.idle_cpu_percent is not None


class AgentPolicy(models.Model):
    """A team's policy for Claude Code itself, set by a team admin (teams.agent_policy):
    `managed_settings` is delivered read-only, root-owned, as Claude Code's
    managed-settings.json into every sandbox of the team at its start; `record_prompts` lets the
    agent-activity receiver keep the text of prompts (otherwise only their length)."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="agent_policy")
    managed_settings = models.JSONField(default=dict, blank=True)
    record_prompts = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        verbose_name_plural = "agent policies"

    def __str__(self) -> str:
        return f"agent policy of {self.team}"


class IdleWatch(models.Model):
    """What the idle rule (teams.idle) last saw of one running sandbox: Docker's CPU counters at
    the last look, so that the next look measures the CPU used over the whole interval (a burst
    between two looks counts), and since when it has been idle."""

    sandbox = models.OneToOneField("sandboxes.Sandbox", on_delete=models.CASCADE, related_name="idle_watch")
    container_id = models.CharField(max_length=64, blank=True, default="")
    sample = models.JSONField(default=dict, blank=True)
    sampled_at = models.DateTimeField(null=True, blank=True)
    idle_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"idle watch of {self.sandbox_id}"
