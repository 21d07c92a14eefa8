"""Forms parse and validate input; they never write (views call services for that)."""

import os
import re
from decimal import Decimal

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator

from . import engine, policy, workspace
from .models import Sandbox, Team
from .selectors import teams_for_operator

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$")


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
        if len(parts) != 2 or mode not in ("ro", "rw"):
            errors.append(f"Line {number}: write HOST_PATH:CONTAINER_PATH, optionally followed by :ro or :rw.")
            continue
        host, target = parts[0].strip(), parts[1].strip().rstrip("/")
        problems = policy.check_host_path(host, allowed_roots=[str(r) for r in settings.SANDBOX_MOUNT_ROOTS])
        problems += policy.check_container_path(target)
        if not problems and not os.path.isdir(host):
            problems.append(f"Mount source {host} is not an existing folder.")
        if target in {f"/workspace/{f}" for f in workspace.FOLDERS} or target in {m[1] for m in mounts}:
            problems.append(f"Mount target {target} is already used.")
        if os.path.realpath(host).startswith(str(settings.WORKSPACE_ROOT) + "/") and not problems:
            owner = os.path.relpath(os.path.realpath(host), settings.WORKSPACE_ROOT).split("/")[0]
            if Sandbox.objects.exclude(status=Sandbox.Status.DESTROYED).filter(name=owner).exists():
                problems.append(f"Mount source {host} belongs to sandbox {owner}.")
        errors += [f"Line {number}: {p}" for p in problems]
        mounts.append((host, target, mode == "ro"))
    if errors:
        raise forms.ValidationError(errors)
    return mounts


class SandboxCreateForm(forms.Form):
    name = forms.CharField(
        max_length=40,
        help_text="Lower-case letters, digits and hyphens; also the name of its workspace folder.",
    )
    team: forms.ModelChoiceField = forms.ModelChoiceField(queryset=Team.objects.none(), empty_label=None)
    image = forms.CharField(max_length=255)
    memory_mb = forms.IntegerField(label="Memory (MB)", min_value=256)
    cpus = forms.DecimalField(label="CPUs", min_value=Decimal("0.25"), max_digits=5, decimal_places=2)
    network_mode = forms.ChoiceField(choices=Sandbox.Network.choices, label="Network")
    extra_mounts = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "/path/inside/allowed/root:/workspace/data:ro"}),
        help_text="One per line, HOST_PATH:CONTAINER_PATH[:ro]. Host folders must be inside "
        + ", ".join(str(r) for r in settings.SANDBOX_MOUNT_ROOTS) + "; targets inside /workspace/ or /mnt/.",
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams_for_operator(user=user)  # type: ignore[attr-defined]
        for field, limit, why in (
            ("memory_mb", settings.SANDBOX_MAX_MEMORY_MB, "the panel's limit, SANDBOX_MAX_MEMORY_MB"),
            ("cpus", Decimal(str(settings.SANDBOX_MAX_CPUS)), "the CPUs this machine has, or SANDBOX_MAX_CPUS"),
        ):
            self.fields[field].validators.append(MaxValueValidator(limit, message=f"At most {limit:g} ({why})."))
            self.fields[field].widget.attrs["max"] = limit
        self.initial.setdefault("image", settings.SANDBOX_DEFAULT_IMAGE)
        self.initial.setdefault("memory_mb", settings.SANDBOX_DEFAULT_MEMORY_MB)
        self.initial.setdefault("cpus", Decimal(str(settings.SANDBOX_DEFAULT_CPUS)))
        self.initial.setdefault("network_mode", Sandbox.Network.INTERNET)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not NAME_RE.match(name):
            raise forms.ValidationError("Use 1-40 lower-case letters, digits or hyphens, starting and ending with a letter or digit.")
        if Sandbox.objects.exclude(status=Sandbox.Status.DESTROYED).filter(name=name).exists():
            raise forms.ValidationError(f"A sandbox named {name!r} already exists.")
        path = settings.WORKSPACE_ROOT / name
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise forms.ValidationError(f"{path} exists and is not a plain folder.")
        return name

    def clean_image(self) -> str:
        image = self.cleaned_data["image"].strip()
        if not IMAGE_RE.match(image):
            raise forms.ValidationError("Not a valid image reference.")
        try:
            if not engine.image_exists(image):
                raise forms.ValidationError(f"Image {image} is not on this machine; build or pull it first.")
        except engine.EngineUnavailable:
            pass  # the sandbox is recorded and its start fails with a clear reason; Start retries
        return image

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
