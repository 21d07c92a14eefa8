"""The audit trail as the audit page lists it, its filters, and a checked export's verdict."""

from rest_framework import serializers

from .serializers import StrictSerializer


class AuditFilter(StrictSerializer):
    """The audit page's filters (each also taken by the exports), checked before any query."""

    actor = serializers.CharField(required=False, allow_blank=True, max_length=150, help_text="A user name, exactly.")
    sandbox = serializers.CharField(required=False, allow_blank=True, max_length=255, help_text="A target (a sandbox's name), exactly.")
    team = serializers.IntegerField(required=False, min_value=1, max_value=10**12 - 1, help_text="A team's id.")
    action = serializers.CharField(required=False, allow_blank=True, max_length=64, help_text="A prefix, such as `backup.`.")
    since = serializers.CharField(required=False, allow_blank=True, max_length=40, help_text="YYYY-MM-DD or YYYY-MM-DDTHH:MM.")
    until = serializers.CharField(required=False, allow_blank=True, max_length=40, help_text="YYYY-MM-DD (the whole day) or a date-time.")


class AuditListFilter(AuditFilter):
    page = serializers.IntegerField(required=False, min_value=1, max_value=10**9)


class AuditEventSerializer(serializers.Serializer):
    seq = serializers.IntegerField(
        required=False, help_text="Its place in the whole trail: for superusers only (a member's gaps would count other teams' events)."
    )
    created_at = serializers.DateTimeField()
    actor_name = serializers.CharField()
    action = serializers.CharField()
    target = serializers.CharField(allow_blank=True)
    sandbox_uuid = serializers.UUIDField(allow_null=True)
    team_id = serializers.IntegerField(allow_null=True)
    details = serializers.JSONField()
    source_ip = serializers.CharField(allow_null=True)


class AuditPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = AuditEventSerializer(many=True)


class AuditVerifySerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="The file is complete and unaltered.")
    events = serializers.IntegerField(help_text="Events verified before the first problem (all of them when ok).")
    problem = serializers.CharField(allow_null=True, help_text="The first problem found, naming its line.")
    scope = serializers.CharField(allow_blank=True, help_text="Which events the exporter could see.")
    filters = serializers.DictField(child=serializers.CharField(), allow_null=True, help_text="The filters it was exported with.")
    chain_head_current = serializers.BooleanField(
        allow_null=True, help_text="Its chain head is in this panel's trail (null: a member's export, which has none)."
    )
