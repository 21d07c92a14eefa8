"""Incidents: a sandbox that looked wrong, frozen, snapshotted as evidence, stopped, reset and
closed, one guided step at a time."""

import uuid as uuidlib

from django.conf import settings
from django.db import models
from django.db.models import Q

from sandboxes.models import Sandbox


class Incident(models.Model):
    """One incident on one sandbox. `step` is the newest step asked for and `state` how it is
    going; the sandbox is held (Sandbox.on_hold) from Declare until Close, so that nothing but
    the incident's own steps changes it. A team-wide freeze makes one incident per sandbox,
    sharing a `group`."""

    class Severity(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"
        HIGH = "high"
        CRITICAL = "critical"

    class Step(models.TextChoices):
        DECLARE = "declare"
        SNAPSHOT = "snapshot"
        STOP = "stop"
        RESET = "reset"
        CLOSE = "close"

    class State(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    class ResetMode(models.TextChoices):
        CLEAN = "clean", "Recreate it clean from its image, keeping its data"
        RESTORE = "restore", "Restore an earlier backup"

    uuid = models.UUIDField(default=uuidlib.uuid4, unique=True, editable=False)
    sandbox = models.ForeignKey(Sandbox, on_delete=models.PROTECT, related_name="incidents")
    team = models.ForeignKey("teams.Team", on_delete=models.PROTECT, related_name="+")
    sandbox_name = models.CharField(max_length=40)
    group = models.UUIDField(null=True, blank=True, db_index=True)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    summary = models.TextField()
    step = models.CharField(max_length=8, choices=Step.choices, default=Step.DECLARE)
    state = models.CharField(max_length=8, choices=State.choices, default=State.RUNNING)
    step_detail = models.TextField(blank=True, default="")
    declared_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    declared_by_name = models.CharField(max_length=150)
    declared_at = models.DateTimeField(auto_now_add=True)
    # The evidence: an image committed from the container, a backup, and the archive bundling
    # everything with a sha256 manifest (its own sha256 is in the audit trail too).
    image_id = models.CharField(max_length=80, blank=True, default="")
    image_ref = models.CharField(max_length=255, blank=True, default="")
    backup = models.ForeignKey("backups.Backup", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    evidence_file = models.CharField(max_length=255, blank=True, default="")
    evidence_sha256 = models.CharField(max_length=64, blank=True, default="")
    evidence_size = models.PositiveBigIntegerField(default=0)
    evidence_members = models.JSONField(default=list, blank=True)  # [{path, size, sha256}] as the manifest lists them
    reset_mode = models.CharField(max_length=8, choices=ResetMode.choices, blank=True, default="")
    reset_backup = models.ForeignKey("backups.Backup", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reset_drop_outside_links = models.BooleanField(default=False)
    notes = models.TextField(blank=True, default="")
    resolution = models.CharField(max_length=200, blank=True, default="")
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by_name = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-declared_at", "-id"]
        constraints = [
            # One open incident per sandbox.
            models.UniqueConstraint(fields=["sandbox"], condition=~Q(step="close", state="done"), name="one_open_incident_per_sandbox"),
        ]

    def __str__(self) -> str:
        return f"Incident #{self.pk} on {self.sandbox_name}"

    @property
    def is_open(self) -> bool:
        return not (self.step == self.Step.CLOSE and self.state == self.State.DONE)

    @property
    def evidence_path(self):
        return settings.EVIDENCE_ROOT / self.evidence_file if self.evidence_file else None


class IncidentEvent(models.Model):
    """One line of an incident's timeline."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    step = models.CharField(max_length=8, choices=Incident.Step.choices)
    message = models.TextField()
    actor_name = models.CharField(max_length=150, default="system")
    failed = models.BooleanField(default=False)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.at:%H:%M:%S} {self.step}: {self.message[:60]}"
