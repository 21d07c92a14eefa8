"""A sandbox's settings as its page changes them: network mode, allowlist, disk quota, git
identity and SSH key (its public half; the private half never leaves the vault)."""

from django.conf import settings
from rest_framework import serializers

from sandboxes.models import Sandbox
from sandboxes.network.allowlist import PRESETS

from .serializers import BIG, StrictSerializer


class SandboxSettingsSerializer(serializers.Serializer):
    network_mode = serializers.ChoiceField(choices=Sandbox.Network.choices)
    egress_presets = serializers.ListField(child=serializers.CharField())
    egress_allow = serializers.CharField(allow_blank=True)
    disk_mb = serializers.IntegerField(allow_null=True, help_text="Null: the default quota.")
    git_name = serializers.CharField(allow_blank=True)
    git_email = serializers.CharField(allow_blank=True)
    ssh_public = serializers.CharField(allow_blank=True, help_text="Paste it into your forge; empty: no key yet.")
    ssh_created_at = serializers.DateTimeField(allow_null=True)


class NetworkSerializer(StrictSerializer):
    network_mode = serializers.ChoiceField(choices=Sandbox.Network.choices)


class AllowlistSerializer(StrictSerializer):
    egress_presets = serializers.ListField(child=serializers.ChoiceField(choices=list(PRESETS)), max_length=len(PRESETS), default=list)
    egress_allow = serializers.CharField(allow_blank=True, max_length=20000, default="", help_text="One entry a line, as on the page.")


class DiskSerializer(StrictSerializer):
    disk_mb = serializers.IntegerField(min_value=0, max_value=BIG, help_text=f"From {settings.SANDBOX_MIN_DISK_MB} MB.")


class GitIdentitySerializer(StrictSerializer):
    git_name = serializers.CharField(allow_blank=True, max_length=400, trim_whitespace=False)
    git_email = serializers.CharField(allow_blank=True, max_length=400, trim_whitespace=False)
