"""Teams and their members, as the team pages show them (never an e-mail or a password)."""

from rest_framework import serializers

from incidents.models import Incident
from teams.models import Membership

from .serializers import StrictSerializer
from .serializers_incidents import IncidentSerializer


class TeamSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    slug = serializers.CharField()
    name = serializers.CharField()
    role = serializers.ChoiceField(choices=Membership.Role.choices, help_text="Your role there (admin for a superuser).")
    require_second_factor = serializers.BooleanField()
    url = serializers.CharField()


class MemberSerializer(serializers.Serializer):
    username = serializers.CharField(source="user.username")
    role = serializers.ChoiceField(choices=Membership.Role.choices)


class TeamDetailSerializer(TeamSerializer):
    members = MemberSerializer(many=True)


class MemberSetSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=Membership.Role.choices)


class SecondFactorSetSerializer(StrictSerializer):
    required = serializers.BooleanField(help_text="Whether every member must have a second factor (a member without one is refused).")


class FreezeSerializer(StrictSerializer):
    """The Incidents page's Freeze the team: an incident on every live sandbox of the team."""

    severity = serializers.ChoiceField(choices=Incident.Severity.choices, required=False, default=Incident.Severity.HIGH)
    summary = serializers.CharField(max_length=5000, help_text="What was seen.")


class FrozenSerializer(serializers.Serializer):
    incidents = IncidentSerializer(many=True, help_text="One per sandbox, each held and pausing; a snapshot of each follows.")
    skipped = serializers.ListField(child=serializers.CharField(), help_text="The sandboxes left out, each with why.")


def _count() -> serializers.IntegerField:
    return serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0, max_value=2**31 - 1)


def _amount() -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=7, decimal_places=2, required=False, allow_null=True, default=None)


class UsageSerializer(serializers.Serializer):
    sandboxes = serializers.IntegerField()
    memory_mb = serializers.IntegerField()
    cpus = serializers.CharField(help_text="A number, as text.")
    disk_mb = serializers.IntegerField()


class PolicySerializer(serializers.Serializer):
    """A team's resource policy (a null limit: none), what it uses now, and what it is above."""

    max_sandboxes = serializers.IntegerField(allow_null=True)
    max_memory_mb = serializers.IntegerField(allow_null=True)
    max_cpus = serializers.DecimalField(max_digits=7, decimal_places=2, allow_null=True)
    max_disk_mb = serializers.IntegerField(allow_null=True)
    default_disk_mb = serializers.IntegerField(allow_null=True, help_text="The quota of a sandbox created without one.")
    idle_minutes = serializers.IntegerField(allow_null=True, help_text="The idle rule (with idle_cpu_percent); null: off.")
    idle_cpu_percent = serializers.DecimalField(max_digits=7, decimal_places=2, allow_null=True)
    usage = UsageSerializer(help_text="What its sandboxes take now (every one not destroyed counts).")
    over = serializers.ListField(child=serializers.CharField(), help_text="The limits it is already above, in words.")


class PolicySetSerializer(StrictSerializer):
    """The team page's Resource policy form (superusers): a field left out (or null) is no limit."""

    max_sandboxes = _count()
    max_memory_mb = _count()
    max_cpus = _amount()
    max_disk_mb = _count()
    default_disk_mb = _count()
    idle_minutes = _count()
    idle_cpu_percent = _amount()


class AgentPolicySerializer(serializers.Serializer):
    """A team's policy for Claude Code (teams.agent_policy), as the team page shows it."""

    managed_settings = serializers.JSONField(help_text="Claude Code's managed-settings.json ({} for none).")
    digest = serializers.CharField(help_text="The first 16 hex digits of the SHA-256 of the delivered file (empty for none).")
    record_prompts = serializers.BooleanField(help_text="Whether the agent activity keeps the text of prompts.")
    updated_at = serializers.DateTimeField(allow_null=True)
    updated_by = serializers.CharField(allow_null=True)


class AgentPolicySetSerializer(StrictSerializer):
    managed_settings = serializers.JSONField(
        help_text="A JSON object of Claude Code's managed settings (its known top-level keys only, at most 64 KiB; {} for none)."
    )
    record_prompts = serializers.BooleanField(required=False, default=False)


class TeamAllowlistSerializer(StrictSerializer):
    egress_allow = serializers.CharField(allow_blank=True, max_length=20000, help_text="One entry a line, as a sandbox's own list.")
