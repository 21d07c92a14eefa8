"""Sandboxes and their extra mounts.

Status is written only by services.py through guarded updates; `pending_action` names the one
action in flight (empty when idle), which is how two actions on one sandbox are kept apart.
Numeric limits and the name are also constrained in the database, so that no input path (the
form, the CLI, a script) can store a row that a page cannot render or Destroy cannot remove.
"""

import uuid as uuidlib
from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q

from hosts.models import Host, local_host_pk
from teams.models import Team


class Sandbox(models.Model):
    """One hardened container with its workspace folders and home volume.

    `uuid` is the sandbox's identity: its container labels, its home volume's name and the
    marker file in its folder carry it, so a later sandbox that reuses the name never adopts
    what an earlier one left. `host_path_ids` records the (device, inode) of every folder it
    mounts, taken when the folder was created or first accepted, and checked before every start.
    """

    class Status(models.TextChoices):
        CREATING = "creating"
        RUNNING = "running"
        STOPPED = "stopped"
        PAUSED = "paused"
        ERROR = "error"
        DESTROYING = "destroying"
        DESTROYED = "destroyed"

    class Action(models.TextChoices):
        """What can be done to a sandbox: the action table (services.actions.ACTIONS), the
        buttons, the URLs and the CLI verbs all use these names."""

        START = "start"
        STOP = "stop"
        RESTART = "restart"
        PAUSE = "pause"
        UNPAUSE = "unpause"
        RESET = "reset"
        CLEAN = "clean"
        DESTROY = "destroy"

    class Job(models.TextChoices):
        """What else can hold a sandbox's claim: the jobs of the backups and incidents apps. They
        claim a sandbox like a lifecycle action, so nothing else changes it meanwhile."""

        BACKUP = "backup"
        RESTORE = "restore"
        INCIDENT = "incident"
        CHECKPOINT = "checkpoint"
        ROLLBACK = "rollback"
        MIGRATE = "migrate"
        MOVE = "move"

    class Network(models.TextChoices):
        INTERNET = "internet", "Internet"
        ALLOWLIST = "allowlist", "Allowlist only"
        NONE = "none", "No network"

    name = models.SlugField(max_length=40)
    uuid = models.UUIDField(default=uuidlib.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="sandboxes")
    # The Docker engine it lives on (placed at create: hosts.placement). Protected: a host that
    # holds sandboxes, destroyed ones included, cannot be deleted. A row made without one (code
    # from before hosts) lands on "local".
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="sandboxes", default=local_host_pk)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    image = models.CharField(max_length=255)
    memory_mb = models.PositiveIntegerField()
    cpus = models.DecimalField(max_digits=5, decimal_places=2)
    pids_limit = models.PositiveIntegerField()
    network_mode = models.CharField(max_length=10, choices=Network.choices, default=Network.INTERNET)
    # What `allowlist` mode reaches (sandboxes.network.allowlist): the panel's presets by key, and the
    # sandbox's own domains, wildcards and CIDRs with their ports. Kept in the other modes too.
    egress_presets = models.JSONField(default=list, blank=True)
    egress_allow = models.TextField(blank=True, default="")
    # The image's own files cannot be changed from inside (CIS Docker 5.13); /tmp and /var/tmp are
    # in memory, the home volume and the workspace folders stay writable. An opt-out per sandbox.
    read_only_rootfs = models.BooleanField(default=True)
    # Docker lets any user of a container listen on ports below 1024 and send ICMP echo through
    # unprivileged ping sockets; a sandbox gets the kernel's own refusal of both
    # (policy.network_sysctls) unless it opts in here.
    low_ports_and_ping = models.BooleanField(default=False)

    class Runtime(models.TextChoices):
        RUNC = "runc", "Standard (runc)"
        RUNSC = "runsc", "gVisor (runsc): its own application kernel"

    # runsc: the sandbox's system calls go to gVisor's kernel, not the host's (the original
    # `manage.sh`'s "VM option", for Linux). Offered once the engine has it registered
    # (scripts/panel.sh).
    runtime = models.CharField(max_length=8, choices=Runtime.choices, default=Runtime.RUNC)
    # An SELinux level for the container's label (e.g. s0:c100,c200), only where the host
    # enforces SELinux (policy.check_selinux_level). Empty: Docker's default label.
    selinux_level = models.CharField(max_length=100, blank=True, default="")
    # The live security checklist's last result (sandboxes.checklist): how many automatic checks
    # failed (None: not checked yet), and when. Shown as the dashboard's badge.
    checklist_failed = models.PositiveSmallIntegerField(null=True, blank=True)
    checklist_checked_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.CREATING)
    pending_action = models.CharField(max_length=12, blank=True, default="", choices=Action.choices + Job.choices)
    # An open incident holds the sandbox: only the incident's own steps (and backups, which only
    # read) may claim it until the incident is closed. See incidents.services.
    on_hold = models.BooleanField(default=False)
    status_detail = models.TextField(blank=True, default="")
    # What Docker sees of the running container, beside its status (services.reconcile): its
    # image's health check ("" without one), and the processes the kernel killed for want of
    # memory, counted while they come less than OOM_RECENT apart (a main process can live on
    # while everything it starts is killed).
    health = models.CharField(max_length=12, blank=True, default="")
    oom_kills = models.PositiveIntegerField(default=0)
    oom_since = models.DateTimeField(null=True, blank=True)
    oom_last_at = models.DateTimeField(null=True, blank=True)
    container_id = models.CharField(max_length=64, blank=True, default="")
    # When `pending_action` was claimed: a claim much older than any action takes means its task
    # was lost (say, Redis restarted), and the periodic resync queues it again.
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Written every few seconds by the worker carrying out `pending_action`: a claim whose
    # heartbeat stops has lost its worker. `attempts` counts the runs of the current claim.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    host_path_ids = models.JSONField(default=dict, blank=True)
    # The disk quota (MB) of the sandbox's folders, home and checkpoints, and the btrfs quota group
    # that enforces it ("1/<id>", storage.pool). No group: plain folders (no pool), no quota.
    disk_mb = models.PositiveIntegerField(null=True, blank=True)
    disk_group = models.CharField(max_length=32, blank=True, default="")
    # Its checkpoints' retention, as a backup schedule's (storage.services.rotate): the newest
    # `checkpoint_keep_last` (SANDBOX_KEEP_CHECKPOINTS when None) and those younger than
    # `checkpoint_keep_days` (no age rule when None) are kept.
    checkpoint_keep_last = models.PositiveIntegerField(null=True, blank=True)
    checkpoint_keep_days = models.PositiveIntegerField(null=True, blank=True)
    # The warm-pool slot (its key, services.warm) whose started container this sandbox took at
    # its create, while it runs that container: Docker recorded the slot's folders as its mount
    # sources, so its next start makes a container from the sandbox's own spec. "" otherwise.
    warm_slot = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # A destroyed sandbox keeps its row for history but frees its name.
            models.UniqueConstraint(fields=["name"], condition=~Q(status="destroyed"), name="unique_live_name"),
            models.CheckConstraint(condition=Q(name__regex=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), name="sandbox_name_is_a_slug"),
            models.CheckConstraint(condition=Q(memory_mb__gte=6, memory_mb__lte=16 * 1024 * 1024), name="sandbox_memory_in_range"),
            models.CheckConstraint(condition=Q(cpus__gt=0, cpus__lte=512), name="sandbox_cpus_in_range"),
            models.CheckConstraint(condition=Q(pids_limit__gt=0, pids_limit__lte=4_194_304), name="sandbox_pids_in_range"),
            models.CheckConstraint(
                condition=Q(disk_mb__isnull=True) | Q(disk_mb__gte=64, disk_mb__lte=1 << 32), name="sandbox_disk_in_range"
            ),
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
    def home_path(self) -> Path:
        """Where a sandbox in the storage pool keeps its home (its volume is bound to it)."""
        return settings.WORKSPACE_ROOT / self.name / "home"

    @property
    def in_pool(self) -> bool:
        return bool(self.disk_group)

    @property
    def volume_name(self) -> str:
        return f"{self.container_name}-home-{self.uuid}"


class Move(models.Model):
    """A stopped sandbox moving to another host (services.moves): its archive written on the
    source host, carried to the target through both engines, checked and restored there. Each
    step is recorded so that a redelivered task carries on where the last one stopped; while it
    runs the sandbox is claimed (Job.MOVE) and stays whole on its source host until the target
    has restored it."""

    class Status(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    class Step(models.TextChoices):
        ARCHIVE = "archive"  # on the source host's jobs queue
        TRANSFER = "transfer"  # on the panel's jobs queue (it reaches both engines)
        RESTORE = "restore"  # on the target host's jobs queue
        CLEANUP = "cleanup"  # on the source host's jobs queue, once the move has ended
        ENDED = "ended"

    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="moves")
    source = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="+")
    target = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING)
    step = models.CharField(max_length=8, choices=Step.choices, default=Step.ARCHIVE)
    backup_id = models.PositiveBigIntegerField(null=True, blank=True)  # the archive's Backup row (backups app)
    archive = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    # The target found the archive already in its BACKUP_ROOT before copying it there (the two
    # hosts share that folder): the source's clean-up then leaves it.
    archive_shared = models.BooleanField(default=False)
    # What the sandbox's row said of its place on the source (folders' identities, quota group,
    # container): put back if the target fails, and what the source's cleanup removes.
    source_state = models.JSONField(default=dict, blank=True)
    detail = models.TextField(blank=True)
    requested_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"move of {self.sandbox_id} from {self.source_id} to {self.target_id}"


class Mount(models.Model):
    """An extra host folder mounted into a sandbox, validated by policy.check like the rest."""

    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="mounts")
    host_path = models.CharField(max_length=1024)
    container_path = models.CharField(max_length=1024)
    read_only = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.host_path} -> {self.container_path}{' (ro)' if self.read_only else ''}"


class TerminalSession(models.Model):
    """One browser terminal opened into a sandbox: who, when and for how long (never what was
    typed). Listed on the sandbox's page, and audited when it opens and closes."""

    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="terminal_sessions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    user_name = models.CharField(max_length=150)
    exec_id = models.CharField(max_length=64, blank=True, default="")
    # The process that holds the session's socket (host:pid:start time): a session whose process
    # is gone (the server was killed) is closed and its shell hung up by the periodic resync.
    server = models.CharField(max_length=200, blank=True, default="")
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.user_name} in {self.sandbox} at {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def duration_seconds(self) -> int | None:
        return int((self.ended_at - self.started_at).total_seconds()) if self.ended_at else None


class Secret(models.Model):
    """A value handed to sandboxes (an API key, a token): for one sandbox, or for every sandbox
    of a team (a sandbox's own secret of the same name wins). Stored only encrypted
    (sandboxes.secrets.vault, with a key kept outside the database); never shown again after saving,
    never written to logs, audit details, backups or exports. Delivered at each start as an
    environment variable or as a file in /run/secrets (in memory, readable by the sandbox's user
    only)."""

    class Delivery(models.TextChoices):
        ENV = "env", "Environment variable"
        FILE = "file", "File in /run/secrets"
        # The sandbox gets a placeholder in its environment; the panel's credential proxy puts
        # the value into requests to `hosts` (in `header`) and nowhere else.
        PROXY = "proxy", "Injected by the proxy"

    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="secrets")
    sandbox = models.ForeignKey(Sandbox, null=True, blank=True, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=128)
    delivery = models.CharField(max_length=8, choices=Delivery.choices, default=Delivery.ENV)
    ciphertext = models.TextField()
    # For delivery "proxy": the names the value is sent to (space-separated; "*.example.com"
    # for its subdomains) and the header that carries it ("x-api-key", "Authorization: Bearer").
    hosts = models.CharField(max_length=1000, blank=True, default="")
    header = models.CharField(max_length=200, blank=True, default="")
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(team__isnull=False, sandbox__isnull=True) | Q(team__isnull=True, sandbox__isnull=False)),
                name="secret_for_a_team_or_a_sandbox",
            ),
            models.UniqueConstraint(fields=["team", "name"], condition=Q(team__isnull=False), name="unique_team_secret"),
            models.UniqueConstraint(fields=["sandbox", "name"], condition=Q(sandbox__isnull=False), name="unique_sandbox_secret"),
            models.CheckConstraint(condition=Q(name__regex=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"), name="secret_name_is_a_variable_name"),
        ]

    def __str__(self) -> str:
        return self.name


class Identity(models.Model):
    """A sandbox's git identity (written into its home's .gitconfig at each start) and its SSH
    key (ed25519, made by the panel; the private half stored encrypted and handed over in
    /run/secrets, so it is in no backup; the public half shown to paste into a forge)."""

    sandbox = models.OneToOneField(Sandbox, on_delete=models.CASCADE, related_name="identity")
    git_name = models.CharField(max_length=200, blank=True, default="")
    git_email = models.CharField(max_length=254, blank=True, default="")
    ssh_public = models.TextField(blank=True, default="")
    ssh_private = models.TextField(blank=True, default="")  # encrypted
    ssh_created_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"identity of {self.sandbox}"


class ChecklistItem(models.Model):
    """One manual item of a team's security checklist (pre-filled from the product's original
    checklist), ticked per sandbox by a user; ticks are audited."""

    class Phase(models.TextChoices):
        BEFORE = "before", "Before starting work"
        DURING = "during", "During work"
        AFTER = "after", "After work"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="checklist_items")
    phase = models.CharField(max_length=6, choices=Phase.choices)
    text = models.CharField(max_length=200)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "pk"]

    def __str__(self) -> str:
        return self.text


class ChecklistTick(models.Model):
    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="checklist_ticks")
    item = models.ForeignKey(ChecklistItem, on_delete=models.CASCADE, related_name="ticks")
    ticked_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    ticked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sandbox", "item"], name="one_tick_per_item")]

    def __str__(self) -> str:
        return f"{self.item} ticked for {self.sandbox}"


class DecisionKind(models.TextChoices):
    CONNECTION = "connection"  # the host's egress rules (kernel log)
    DNS = "dns"  # the panel's resolver
    PROXY = "proxy"  # the credential proxy: a CONNECT or a request through it
    HTTP = "http"  # an HTTP rule (method, path) of an allowlist entry, enforced by the proxy


class EgressDenial(models.Model):
    """One refused connection attempt (or a burst of alike ones within a second) from a sandbox,
    read from the kernel's log of the host's egress rules (sandboxes.network.decision_log): the first thing
    an incident responder reads."""

    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="egress_denials")
    at = models.DateTimeField(db_index=True)
    # A refused connection has a destination; a name the panel's resolver refused (allowlist
    # mode: NXDOMAIN) has its name, and protocol "dns".
    destination = models.GenericIPAddressField(null=True, blank=True)
    name = models.CharField(max_length=253, blank=True, default="")
    port = models.PositiveIntegerField(null=True, blank=True)
    protocol = models.CharField(max_length=8)
    count = models.PositiveIntegerField(default=1)
    # Which layer decided (the host's rules, the resolver, the credential proxy, an HTTP rule of
    # the allowlist) and how: the decision stream carries allowed requests of the proxy too.
    kind = models.CharField(max_length=10, choices=DecisionKind.choices, default=DecisionKind.CONNECTION)
    allowed = models.BooleanField(default=False)
    method = models.CharField(max_length=10, blank=True, default="")
    path = models.CharField(max_length=500, blank=True, default="")
    reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["-at", "-pk"]
        # The card reads one sandbox's rows, newest first, a page at a time or in a time window.
        indexes = [models.Index(fields=["sandbox", "-at"], name="denial_sandbox_newest")]

    def __str__(self) -> str:
        return f"{self.sandbox} -> {self.name or self.destination}:{self.port or ''} {self.protocol}"


class WarmSlot(models.Model):
    """One container of a host's warm pool (services.warm): started and hardened like a
    sandbox's, for one image and network mode, with its folders ready in a subvolume of the
    storage pool (WORKSPACE_ROOT/.warm/<key>). A create that matches takes it: the sandbox gets
    the slot's UUID, its folders are the slot's renamed, its container the slot's renamed and
    its limits set with `docker update`."""

    class Status(models.TextChoices):
        PREPARING = "preparing"  # its folders and container are being made
        READY = "ready"  # started, checked: a create may take it
        TAKEN = "taken"  # a sandbox took it at its create; its start claims the container

    key = models.CharField(max_length=32, unique=True)
    uuid = models.UUIDField(default=uuidlib.uuid4, unique=True, editable=False)
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="warm_slots")
    image = models.CharField(max_length=255)
    network_mode = models.CharField(max_length=10, choices=Sandbox.Network.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PREPARING)
    sandbox = models.OneToOneField(Sandbox, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    container_id = models.CharField(max_length=64, blank=True, default="")
    host_path_ids = models.JSONField(default=dict, blank=True)
    disk_group = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [models.Index(fields=["host", "image", "network_mode", "status"])]

    def __str__(self) -> str:
        return f"warm slot {self.key} ({self.image}, {self.network_mode}, {self.status})"
