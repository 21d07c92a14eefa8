"""A host: one Docker engine sandboxes are placed on, and what it may hold.

Today every host's engine is reached from this machine (its own socket, or a URL the engine
answers on); agents running on other machines are the next step (issue 16). The first host,
"local", is made by a data migration from the settings, so a panel from before hosts keeps
working unchanged.
"""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models

from . import machine

LOCAL = "local"


def _machine_cpus() -> Decimal:
    return machine.cpus()


def _machine_memory_mb() -> int:
    return machine.memory_mb()


def _machine_disk_mb() -> int:
    return machine.disk_mb()


class Host(models.Model):
    """One Docker engine. `docker_url` blank: this machine's default socket, as the settings say
    (DOCKER_HOST, else /var/run/docker.sock). Capacity is what placement reserves against: a
    sandbox not destroyed holds its memory, CPUs and disk quota on its host, running or not."""

    name = models.SlugField(max_length=63, unique=True)
    docker_url = models.CharField(max_length=255, blank=True)
    # Served by a host agent on its own machine (`manage.py host join`): its workers read its
    # queues, and `docker_url` is its engine as seen there (blank: that machine's default socket),
    # which this machine cannot use. False: its engine is reached from the panel's machine.
    agent = models.BooleanField(default=False)
    # How the panel's pages and websockets reach an agent's engine (tcp:// with TLS both ways, the
    # panel's certificates in HOSTS_TLS_DIR/<name>/): its sandboxes' logs, stats and terminals.
    # Blank: they cannot, and the host takes no sandbox (hosts.placement).
    panel_url = models.CharField(max_length=255, blank=True)
    cpus = models.DecimalField(max_digits=7, decimal_places=2, default=_machine_cpus, validators=[MinValueValidator(Decimal("0.25"))])
    memory_mb = models.PositiveIntegerField(default=_machine_memory_mb)
    disk_mb = models.PositiveBigIntegerField(default=_machine_disk_mb)
    labels = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    draining = models.BooleanField(default=False)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    engine_version = models.CharField(max_length=64, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def accepts_sandboxes(self) -> bool:
        return self.enabled and not self.draining


def local_host_pk() -> int:
    """The "local" host's key: the default of Sandbox.host, so that a sandbox recorded without a
    host (by code from before hosts) lands on this machine. The row is made again from this
    machine when the table is empty (a test database flushed between tests). Its key alone is
    read: the migrations that add Sandbox.host call this while the table has the columns of
    their time, not the model's."""
    from .services import local_host

    found = Host.objects.filter(name=LOCAL).values_list("pk", flat=True).first()
    return found if found is not None else local_host().pk


class JoinToken(models.Model):
    """A one-time permission for a machine to join as the host `name` (`manage.py host join`).
    Only the SHA-256 of its secret is kept: the token itself is shown once, when it is made.
    Used once (a row lock in the join makes two joins with it end in one host), or revoked,
    which disables the host it made."""

    name = models.SlugField(max_length=63)
    labels = models.JSONField(default=list, blank=True)
    secret_sha256 = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL, related_name="join_tokens")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"join token for {self.name}"

    def state(self, now) -> str:
        """In words, for the Hosts page: waiting, used, revoked or expired."""
        if self.revoked_at:
            return "revoked"
        if self.used_at:
            return "used"
        return "expired" if self.expires_at <= now else "waiting"
