"""Forms parse input; they never write and never decide the rules. Every rule (names, images,
limits, mounts) lives in services and policy, so the CLI and any other caller meet the same
rules with the same messages; the view shows the service's refusals on the form's fields."""

from decimal import Decimal

from django import forms
from django.conf import settings

from hosts.selectors import enabled_host_names
from teams.models import Team
from teams.permissions import teams_for_operator

from . import decisions
from .models import DecisionKind, Sandbox
from .network.allowlist import PRESETS


def parse_mounts(text: str) -> list[tuple[str, str, bool]]:
    """Lines of HOST_PATH:CONTAINER_PATH[:ro|:rw] -> [(host, container, read_only)]."""
    mounts: list[tuple[str, str, bool]] = []
    errors: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        mode = "rw"
        if len(parts) == 3:
            mode = parts.pop()
        if len(parts) != 2 or mode not in ("ro", "rw") or not parts[0].strip() or not parts[1].strip():
            errors.append(f"Line {number}: write HOST_PATH:CONTAINER_PATH, optionally followed by :ro or :rw.")
            continue
        mounts.append((parts[0].strip(), parts[1].strip(), mode == "ro"))
    if errors:
        raise forms.ValidationError(errors)
    return mounts


class SandboxCreateForm(forms.Form):
    name = forms.CharField(
        max_length=200,
        help_text="Lower-case letters, digits and hyphens; also the name of its workspace folder.",
    )
    team: forms.ModelChoiceField = forms.ModelChoiceField(queryset=Team.objects.none(), empty_label=None)
    image = forms.CharField(max_length=300)
    memory_mb = forms.IntegerField(label="Memory (MB)")
    cpus = forms.DecimalField(label="CPUs")
    disk_mb = forms.IntegerField(
        label="Disk quota (MB)",
        required=False,
        help_text='Its folders, home and checkpoints together; writes past it fail with "quota exceeded" inside the sandbox only.',
    )
    network_mode = forms.ChoiceField(choices=Sandbox.Network.choices, label="Network")
    egress_presets = forms.MultipleChoiceField(
        choices=[(k, label) for k, (label, _) in PRESETS.items()],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Allowlist presets",
        help_text="What allowlist mode reaches; also editable later on the sandbox's page.",
    )
    egress_allow = forms.CharField(
        required=False,
        max_length=20000,
        label="Allowlist entries",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "api.example.com\n*.example.org:443\n198.51.100.0/24:22,443"}),
        help_text="In allowlist mode: a domain, *.domain or an IPv4 CIDR, with :ports (443 when none), one a line.",
    )
    runtime = forms.ChoiceField(choices=Sandbox.Runtime.choices, label="Isolation", initial=Sandbox.Runtime.RUNC, required=False)
    selinux_level = forms.CharField(
        required=False,
        max_length=100,
        label="SELinux level",
        help_text="Only where this machine enforces SELinux, e.g. s0:c100,c200 to keep sandboxes apart; empty for Docker's default.",
    )
    writable_root = forms.BooleanField(
        required=False,
        label="Writable root filesystem (less safe)",
        help_text="Off by default: the image's own files are read-only; /tmp, the home and the workspace folders are writable.",
    )
    low_ports_and_ping = forms.BooleanField(
        required=False,
        label="Ports below 1024 and ping (less safe)",
        help_text="Off by default: the agent can listen on ports from 1024 only and cannot send ICMP echo.",
    )
    extra_mounts = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "/srv/shared/datasets:/workspace/data:ro"}),
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams_for_operator(user=user)  # type: ignore[attr-defined]
        self.fields["memory_mb"].widget.attrs.update(min=settings.SANDBOX_MIN_MEMORY_MB, max=settings.SANDBOX_MAX_MEMORY_MB)
        self.fields["cpus"].widget.attrs.update(min="0.25", max=settings.SANDBOX_MAX_CPUS, step="0.25")
        self.fields["disk_mb"].widget.attrs.update(min=settings.SANDBOX_MIN_DISK_MB, max=settings.SANDBOX_MAX_DISK_MB)
        roots = settings.SANDBOX_MOUNT_ROOTS
        self.fields["extra_mounts"].help_text = (
            "One per line, HOST_PATH:CONTAINER_PATH[:ro]. Host folders must lie inside "
            + ", ".join(str(r) for r in roots)
            + "; targets inside /workspace/ or /mnt/."
            if roots
            else "Off: an admin enables extra mounts by naming shared folders in SANDBOX_MOUNT_ROOTS."
        )
        self.initial.setdefault("image", settings.SANDBOX_DEFAULT_IMAGE)
        self.initial.setdefault("memory_mb", settings.SANDBOX_DEFAULT_MEMORY_MB)
        self.initial.setdefault("cpus", Decimal(str(settings.SANDBOX_DEFAULT_CPUS)))
        self.initial.setdefault("disk_mb", settings.SANDBOX_DEFAULT_DISK_MB)
        self.initial.setdefault("network_mode", Sandbox.Network.INTERNET)
        if len(names := enabled_host_names()) > 1:  # a choice only where there is one to make
            self.fields["host"] = forms.ChoiceField(
                choices=[("", "the host with the most memory left"), *((n, n) for n in names)],
                required=False,
                help_text="Where it runs; a disabled or draining host is refused.",
            )

    def clean_extra_mounts(self) -> list[tuple[str, str, bool]]:
        return parse_mounts(self.cleaned_data.get("extra_mounts") or "")


class DestroyForm(forms.Form):
    confirm_name = forms.CharField(label="Type the sandbox name to confirm")

    def __init__(self, *args, sandbox: Sandbox, **kwargs):
        super().__init__(*args, **kwargs)
        self.sandbox = sandbox

    def clean_confirm_name(self) -> str:
        value = self.cleaned_data["confirm_name"].strip()
        if value != self.sandbox.name:
            raise forms.ValidationError(f"Type {self.sandbox.name} exactly to destroy it and all its files.")
        return value


class DenialFilterForm(forms.Form):
    """The refused-connections card's filters (a GET): what is invalid is said and left out."""

    q = forms.CharField(
        required=False,
        max_length=253,
        label="Search",
        widget=forms.TextInput(attrs={"type": "search", "size": 18, "placeholder": "address, name or port"}),
    )
    protocol = forms.ChoiceField(
        required=False, label="Protocol", choices=[("", "any"), ("tcp", "TCP"), ("udp", "UDP"), ("icmp", "ICMP"), ("dns", "DNS (names)")]
    )
    since = forms.ChoiceField(
        required=False,
        label="Time",
        choices=[("", "all kept"), ("5m", "last 5 minutes"), ("1h", "last hour"), ("24h", "last day"), ("7d", "last week")],
    )
    group = forms.ChoiceField(required=False, label="Show", choices=[("", "each attempt"), ("destination", "by destination")])

    def problems(self) -> list[str]:
        return [f"{self.fields[name].label}: {message}" for name, messages in self.errors.items() for message in messages]


class DecisionQueryForm(forms.Form):
    """The decision stream's query (sandboxes.decisions), for the page's download: the API's
    serializer (api.views_decisions) takes the same names, and `follow` (the live tail, capped
    per user as followed logs are: api.follows)."""

    kind = forms.ChoiceField(required=False, choices=[("", "any"), *DecisionKind.choices])
    allowed = forms.NullBooleanField(required=False)
    since = forms.DateTimeField(required=False)
    until = forms.DateTimeField(required=False)
    after = forms.IntegerField(required=False, min_value=0)
    limit = forms.IntegerField(required=False, min_value=1, max_value=decisions.MAX_ROWS)

    def problems(self) -> list[str]:
        return [f"{name}: {message}" for name, messages in self.errors.items() for message in messages]
