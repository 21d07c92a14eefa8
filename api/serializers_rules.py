"""What the sandbox's standing rules read and answer: its daily backup (the Backups card's
Schedule form) and its checkpoint retention (the Storage card's). Shapes only: the rules are
backups.services.schedule_set's and storage.services.checkpoint_retention_set's."""

from rest_framework import serializers

from storage.services import KEEP_DAYS_MAX, KEEP_LAST_MAX

from .serializers import StrictSerializer

DB_INT = 2**31 - 1  # a PositiveIntegerField's most


class ScheduleSerializer(serializers.Serializer):
    configured = serializers.BooleanField(help_text="Whether a daily backup was ever set; false: every other field is null/false.")
    enabled = serializers.BooleanField()
    at = serializers.TimeField(format="%H:%M", allow_null=True, help_text="HH:MM, the panel's time zone.")
    keep_last = serializers.IntegerField(allow_null=True, help_text="Keep the newest this many scheduled backups (null: no count rule).")
    keep_days = serializers.IntegerField(allow_null=True, help_text="Keep scheduled backups this many days (null: no age rule).")
    last_run_on = serializers.DateField(allow_null=True, help_text="The day whose run is done (or that had passed when it was set).")


class ScheduleSetSerializer(StrictSerializer):
    """The Schedule form: a scheduled backup goes when it is outside every limit that is set."""

    enabled = serializers.BooleanField(required=False, default=True)
    at = serializers.TimeField(input_formats=["%H:%M", "%H:%M:%S"], help_text="HH:MM, the panel's time zone.")
    keep_last = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1, max_value=DB_INT)
    keep_days = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1, max_value=DB_INT)


class RetentionSerializer(serializers.Serializer):
    keep_last = serializers.IntegerField(allow_null=True, help_text="How many checkpoints it keeps; null: the panel's keep_default.")
    keep_days = serializers.IntegerField(allow_null=True, help_text="How many days it keeps checkpoints; null: no age rule.")
    keep_default = serializers.IntegerField(help_text="SANDBOX_KEEP_CHECKPOINTS, kept when keep_last is null.")


class RetentionSetSerializer(StrictSerializer):
    """The Storage card's retention form; a field left out (or null) is that field left empty."""

    keep_last = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1, max_value=KEEP_LAST_MAX)
    keep_days = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1, max_value=KEEP_DAYS_MAX)


class RetentionSetResultSerializer(RetentionSerializer):
    removed = serializers.IntegerField(help_text="How many checkpoints the new rule rotated away at once.")
