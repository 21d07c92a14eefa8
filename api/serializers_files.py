"""What the transfer and checkpoint endpoints read and answer (shapes only: the rules are
sandboxes.services.transfer's and storage.services')."""

from rest_framework import serializers

from storage.models import Checkpoint

from .serializers import BIG, SandboxDetailSerializer, StrictSerializer


class EntrySerializer(serializers.Serializer):
    name = serializers.CharField()
    is_dir = serializers.BooleanField()
    is_link = serializers.BooleanField(help_text="A link (never followed: it is not downloaded through).")
    size = serializers.IntegerField()
    mtime = serializers.FloatField(help_text="Seconds since the epoch.")


class TransferFilesSerializer(serializers.Serializer):
    """The sandbox page's Files in and out card."""

    imports = EntrySerializer(many=True, help_text="What imports/ holds (read-only inside the sandbox).")
    exports = EntrySerializer(many=True, help_text="What exports/<path> holds.")
    path = serializers.CharField(allow_blank=True)


class PathQuery(StrictSerializer):
    path = serializers.CharField(required=False, allow_blank=True, max_length=4096, trim_whitespace=False)


class UploadSerializer(serializers.Serializer):
    """multipart/form-data, as the card's upload form."""

    file = serializers.FileField(help_text="At most TRANSFER_MAX_UPLOAD_BYTES.")
    name = serializers.CharField(
        required=False, max_length=255, help_text="The name in imports/; the file's own name (as sent, judged, never rewritten) if none."
    )


class UploadedSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="Where it is, inside the sandbox's workspace.")
    sha256 = serializers.CharField()


class CheckpointSerializer(serializers.ModelSerializer):
    sandbox = serializers.IntegerField(source="sandbox_id")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Checkpoint
        fields = ["id", "sandbox", "label", "automatic", "snapshot", "was_running", "created_by_name", "created_at", "url"]
        read_only_fields = fields

    def get_url(self, checkpoint: Checkpoint) -> str:
        return f"/api/v1/checkpoints/{checkpoint.pk}/"


class CheckpointRowSerializer(CheckpointSerializer):
    size = serializers.IntegerField(allow_null=True, help_text="Bytes only it holds (what deleting it frees); null: unknown.")

    class Meta(CheckpointSerializer.Meta):
        fields = [*CheckpointSerializer.Meta.fields, "size"]
        read_only_fields = fields


class CheckpointQuery(StrictSerializer):
    sandbox = serializers.IntegerField(min_value=1, max_value=BIG, help_text="The sandbox whose checkpoints to list.")


class CheckpointCreateSerializer(StrictSerializer):
    sandbox = serializers.IntegerField(min_value=1, max_value=BIG)
    label = serializers.CharField(required=False, allow_blank=True, max_length=1000, trim_whitespace=False)


class RollbackSerializer(serializers.Serializer):
    """A rollback runs in the request (storage.services): done when this answers."""

    before = CheckpointSerializer(help_text="The checkpoint of what was there before: roll back to it to undo.")
    sandbox = SandboxDetailSerializer()
