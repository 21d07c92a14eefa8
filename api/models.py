"""Personal API tokens: what a script shows instead of a session."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    """A personal token. Only its SHA-256 is kept: the secret is shown once, when it is made.
    `prefix` (the token's first characters, unique) finds the row and names the token in lists
    and in the audit trail. `scope` narrows what the user's roles allow through it (api.auth)."""

    class Scope(models.TextChoices):
        READ = "read", "read: look only (GET)"
        OPERATE = "operate", "operate: create sandboxes and run lifecycle actions"
        ADMIN = "admin", "admin: everything your roles allow"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=8, choices=Scope.choices)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.prefix} ({self.name})"

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()
