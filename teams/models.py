"""Teams and the roles of their members. Every sandbox belongs to exactly one team, and every
read and write of a sandbox is authorised by the reader's role in it (teams.permissions)."""

from django.conf import settings
from django.db import models


class Team(models.Model):
    """A group of people sharing sandboxes."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True)
    # Every member must sign in with a second factor (TOTP): see teams.second_factor.
    require_second_factor = models.BooleanField(default=False)

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
