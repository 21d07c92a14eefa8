"""Backups of sandboxes, their schedules, and restores."""

from django.conf import settings
from django.db import models

from sandboxes.models import Sandbox


class Backup(models.Model):
    """One archive under BACKUP_ROOT: the sandbox's six folders, its home volume and a manifest.

    Its row is made when the backup is asked for (status `running`), and the file appears under
    its final name only when complete (see archive.ArchiveWriter). `sha256` is the whole file's:
    a restore refuses a file that no longer matches it. Evidence of an incident (`kind`
    evidence) is never deleted by rotation, Clean, Destroy or the Delete button."""

    class Kind(models.TextChoices):
        MANUAL = "manual"
        SCHEDULED = "scheduled"
        PRE_RESTORE = "pre-restore", "before a restore"
        EVIDENCE = "evidence", "incident evidence"
        IMPORTED = "imported"

    class Status(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    sandbox = models.ForeignKey(Sandbox, null=True, blank=True, on_delete=models.SET_NULL, related_name="backups")
    team = models.ForeignKey("teams.Team", on_delete=models.PROTECT, related_name="+")
    sandbox_name = models.CharField(max_length=40)
    file_name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.MANUAL)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING)
    detail = models.TextField(blank=True, default="")
    # The sandbox's settings as the manifest records them (a restore into a new sandbox uses them,
    # judged again by every rule of a create).
    config = models.JSONField(default=dict, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, default="")
    files = models.PositiveIntegerField(default=0)
    data_bytes = models.PositiveBigIntegerField(default=0)
    progress_files = models.PositiveIntegerField(default=0)
    progress_bytes = models.PositiveBigIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_ok = models.BooleanField(null=True, blank=True)
    verify_detail = models.TextField(blank=True, default="")
    # Deliveries of this backup's task (its writing, a verify or an import) that have not
    # finished. With late acks a worker killed by one (out of memory) gets it back; past
    # SANDBOX_MAX_ATTEMPTS it gives up.
    attempts = models.PositiveSmallIntegerField(default=0)
    # A backup of a sandbox in the storage pool reads a snapshot without holding the sandbox:
    # its own worker writes this heartbeat while it reads, so a run whose worker died is taken
    # up again (services.backup).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.file_name

    @property
    def path(self):
        return settings.BACKUP_ROOT / self.file_name

    @property
    def is_evidence(self) -> bool:
        return self.kind == self.Kind.EVIDENCE


class BackupSchedule(models.Model):
    """A daily backup of one sandbox at a set time (the panel's time zone), keeping the newest
    `keep_last` scheduled backups and/or those younger than `keep_days`: a scheduled backup
    goes when it is outside every limit that is set. Other kinds are never rotated."""

    sandbox = models.OneToOneField(Sandbox, on_delete=models.CASCADE, related_name="backup_schedule")
    enabled = models.BooleanField(default=True)
    at = models.TimeField()
    keep_last = models.PositiveIntegerField(null=True, blank=True)
    keep_days = models.PositiveIntegerField(null=True, blank=True)
    # The day whose run is done: run, or passed already when the schedule was set (its first
    # run is the next `at`, services.schedule_set).
    last_run_on = models.DateField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(keep_last__isnull=True) | models.Q(keep_last__gte=1), name="schedule_keeps_one"),
        ]

    def __str__(self) -> str:
        return f"{self.sandbox} daily at {self.at:%H:%M}"


class Restore(models.Model):
    """Putting a backup's files back: into its own sandbox (after a backup of what is there now)
    or into a new sandbox made from the manifest's settings."""

    class Status(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        REFUSED = "refused"

    # A backup that a running restore reads is never deleted (backups.services refuses it).
    backup = models.ForeignKey(Backup, null=True, on_delete=models.SET_NULL, related_name="restores")
    backup_name = models.CharField(max_length=200)
    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="restores")
    into_new = models.BooleanField(default=False)
    drop_outside_links = models.BooleanField(default=False)
    safety_backup = models.ForeignKey(Backup, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING)
    detail = models.TextField(blank=True, default="")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.backup} -> {self.sandbox}"
