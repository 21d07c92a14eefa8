"""What the backup endpoints read and answer. As in serializers.py: shapes only; the rules are
the services' (backup_request, restore_request, backup_import) and the page's RestoreForm."""

from rest_framework import serializers

from backups.models import Backup, Restore

from .serializers import BIG, StrictSerializer, TeamRef


class RestoreSerializer(serializers.ModelSerializer):
    """A restore: its state (running, done, failed, refused) and what it said."""

    backup = serializers.IntegerField(source="backup_id", allow_null=True)
    sandbox = serializers.IntegerField(source="sandbox_id")
    safety_backup = serializers.IntegerField(source="safety_backup_id", allow_null=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Restore
        fields = [
            "id",
            "backup",
            "backup_name",
            "sandbox",
            "into_new",
            "drop_outside_links",
            "safety_backup",
            "status",
            "detail",
            "requested_by_name",
            "created_at",
            "finished_at",
            "url",
        ]
        read_only_fields = fields

    def get_url(self, restore: Restore) -> str:
        return f"/api/v1/restores/{restore.pk}/"


class BackupSerializer(serializers.ModelSerializer):
    """A backup as the Backups page lists it."""

    team = TeamRef(source="*")
    sandbox = serializers.IntegerField(source="sandbox_id", allow_null=True, help_text="Its sandbox's id; null once it is gone.")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Backup
        fields = [
            "id",
            "file_name",
            "sandbox",
            "sandbox_name",
            "team",
            "kind",
            "status",
            "detail",
            "size_bytes",
            "sha256",
            "files",
            "data_bytes",
            "created_by_name",
            "created_at",
            "finished_at",
            "verified_at",
            "verified_ok",
            "verify_detail",
            "url",
        ]
        read_only_fields = fields

    def get_url(self, backup: Backup) -> str:
        return f"/api/v1/backups/{backup.pk}/"


class BackupDetailSerializer(BackupSerializer):
    """One backup: its progress while it runs, its verification, and its newest restores."""

    restores = serializers.SerializerMethodField()
    download = serializers.SerializerMethodField(help_text="Where its file is downloaded (operators), once it is done.")

    class Meta(BackupSerializer.Meta):
        fields = [*BackupSerializer.Meta.fields, "progress_files", "progress_bytes", "cancel_requested", "download", "restores"]
        read_only_fields = fields

    def get_restores(self, backup: Backup) -> list[dict]:
        return RestoreSerializer(backup.restores.all()[:20], many=True).data  # type: ignore[return-value]

    def get_download(self, backup: Backup) -> str | None:
        return f"/api/v1/backups/{backup.pk}/download/" if backup.status == Backup.Status.DONE else None


class BackupPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = BackupSerializer(many=True)


class BackupFilter(StrictSerializer):
    sandbox = serializers.IntegerField(required=False, min_value=1, max_value=BIG, help_text="Only this sandbox's backups.")
    team = serializers.IntegerField(required=False, min_value=1, max_value=BIG)
    status = serializers.ChoiceField(required=False, choices=Backup.Status.choices)
    kind = serializers.ChoiceField(required=False, choices=Backup.Kind.choices)
    page = serializers.IntegerField(required=False, min_value=1, max_value=100_000)


class BackupCreateSerializer(StrictSerializer):
    sandbox = serializers.IntegerField(min_value=1, max_value=BIG, help_text="The sandbox to back up; you need the operator role.")


class BackupAcceptedSerializer(serializers.Serializer):
    """A backup, verify or import under way: its state and result are read at `url`."""

    url = serializers.CharField()
    backup = BackupDetailSerializer()


class StagingSerializer(serializers.Serializer):
    """A download not served now: why, and the URL to ask again (after its Retry-After)."""

    detail = serializers.CharField()
    url = serializers.CharField()


class RestoreCreateSerializer(StrictSerializer):
    """The page's Restore form: into the sandbox itself (its name typed again) or into a new one."""

    into = serializers.ChoiceField(choices=["self", "new"])
    confirm_name = serializers.CharField(required=False, allow_blank=True, max_length=200, help_text="into=self: the sandbox's name.")
    new_name = serializers.CharField(required=False, allow_blank=True, max_length=200, help_text="into=new: the new sandbox's name.")
    team = serializers.IntegerField(required=False, min_value=1, max_value=BIG, help_text="into=new: the team's id (operator there).")
    drop_outside_links = serializers.BooleanField(required=False, default=False)


class RestoreAcceptedSerializer(serializers.Serializer):
    url = serializers.CharField()
    restore = RestoreSerializer()


class BackupImportSerializer(serializers.Serializer):
    """multipart/form-data, as the page's Import form."""

    archive = serializers.FileField(help_text="A .tar.gz made by a panel; at most BACKUP_IMPORT_MAX_BYTES.")
    team = serializers.IntegerField(min_value=1, max_value=BIG, help_text="The team's id; you need the operator role there.")
