"""Sandboxes, the teams that own them, and their extra mounts.

Status is written only by services.py through guarded updates; `pending_action` names the one
action in flight (empty when idle), which is how two actions on one sandbox are kept apart.
"""

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q


class Team(models.Model):
    """A group of people sharing sandboxes. Every sandbox belongs to exactly one team."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True)

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's role in a team: viewers read, operators drive sandboxes, admins also destroy."""

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


class Sandbox(models.Model):
    """One hardened container with its workspace folders and home volume."""

    class Status(models.TextChoices):
        CREATING = "creating"
        RUNNING = "running"
        STOPPED = "stopped"
        PAUSED = "paused"
        ERROR = "error"
        DESTROYING = "destroying"
        DESTROYED = "destroyed"

    class Network(models.TextChoices):
        INTERNET = "internet", "Internet"
        NONE = "none", "No network"

    name = models.SlugField(max_length=40)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="sandboxes")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    image = models.CharField(max_length=255)
    memory_mb = models.PositiveIntegerField()
    cpus = models.DecimalField(max_digits=5, decimal_places=2)
    pids_limit = models.PositiveIntegerField()
    network_mode = models.CharField(max_length=10, choices=Network.choices, default=Network.INTERNET)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.CREATING)
    pending_action = models.CharField(max_length=12, blank=True, default="")
    status_detail = models.TextField(blank=True, default="")
    container_id = models.CharField(max_length=64, blank=True, default="")
    # When `pending_action` was claimed: a claim much older than any action takes means its task
    # was lost (say, Redis restarted), and the periodic resync queues it again.
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # A destroyed sandbox keeps its row for history but frees its name.
            models.UniqueConstraint(fields=["name"], condition=~Q(status="destroyed"), name="unique_live_name"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def workspace_path(self) -> Path:
        return settings.WORKSPACE_ROOT / self.name

    @property
    def container_name(self) -> str:
        prefix = "ccpanel" if settings.PANEL_INSTANCE == "default" else f"ccpanel-{settings.PANEL_INSTANCE}"
        return f"{prefix}-{self.name}"

    @property
    def volume_name(self) -> str:
        return f"{self.container_name}-home"

    @property
    def is_busy(self) -> bool:
        return bool(self.pending_action)


class Mount(models.Model):
    """An extra host folder mounted into a sandbox, validated by policy.check like the rest."""

    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="mounts")
    host_path = models.CharField(max_length=1024)
    container_path = models.CharField(max_length=1024)
    read_only = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.host_path} -> {self.container_path}{' (ro)' if self.read_only else ''}"
