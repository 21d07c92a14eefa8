"""Checkpoints: read-only snapshots of a sandbox's subvolume in the storage pool (storage.pool)."""

from django.conf import settings
from django.db import models

from sandboxes.models import Sandbox


class Checkpoint(models.Model):
    """A sandbox's folders and home as they were at one instant, taken in milliseconds (a btrfs
    snapshot, frozen for that instant if the sandbox ran) and kept read-only in the pool until
    it is deleted, rotated away or the sandbox is destroyed. Rolling back to it recreates the
    sandbox's container on a writable copy of it. `size` is what it alone holds (what deleting
    it frees), as the file system counts it, read when it is listed."""

    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="checkpoints")
    label = models.CharField(max_length=100, blank=True, default="")
    # Taken by the panel itself (before a rollback): rotated first.
    automatic = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    # The snapshot's folder name under the pool's .checkpoints/<sandbox uuid>/.
    snapshot = models.CharField(max_length=64)
    was_running = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["sandbox", "snapshot"], name="unique_checkpoint_snapshot")]

    def __str__(self) -> str:
        return f"{self.sandbox} @ {self.created_at:%Y-%m-%d %H:%M:%S}{f' ({self.label})' if self.label else ''}"
