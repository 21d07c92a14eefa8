"""What the incident endpoints read and answer (shapes only: the rules are incidents.services')."""

from rest_framework import serializers

from incidents.models import Incident, IncidentEvent
from incidents.services import NEXT

from .serializers import BIG, StrictSerializer, TeamRef


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = IncidentEvent
        fields = ["at", "step", "message", "actor_name", "failed"]
        read_only_fields = fields


class IncidentSerializer(serializers.ModelSerializer):
    """An incident as the Incidents page lists it: `step` is the newest step asked for, `state`
    how it is going."""

    team = TeamRef(source="*")
    sandbox = serializers.IntegerField(source="sandbox_id")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Incident
        fields = [
            "id",
            "sandbox",
            "sandbox_name",
            "team",
            "severity",
            "summary",
            "step",
            "state",
            "step_detail",
            "declared_by_name",
            "declared_at",
            "closed_at",
            "url",
        ]
        read_only_fields = fields

    def get_url(self, incident: Incident) -> str:
        return f"/api/v1/incidents/{incident.pk}/"


class IncidentDetailSerializer(IncidentSerializer):
    """One incident: its evidence, its reset, its close, its timeline and what may come next."""

    backup = serializers.IntegerField(source="backup_id", allow_null=True, help_text="The evidence backup's id.")
    reset_backup = serializers.IntegerField(source="reset_backup_id", allow_null=True)
    next_step = serializers.SerializerMethodField(help_text="The step that may be asked for now (null: none, or one is running).")
    retry = serializers.SerializerMethodField(help_text="The step that failed and may be run again (null: none).")
    events = EventSerializer(many=True, read_only=True)
    report = serializers.SerializerMethodField()
    evidence = serializers.SerializerMethodField(help_text="Where the evidence archive is downloaded (operators), once there is one.")

    class Meta(IncidentSerializer.Meta):
        fields = [
            *IncidentSerializer.Meta.fields,
            "uuid",
            "group",
            "image_id",
            "image_ref",
            "backup",
            "evidence_file",
            "evidence_sha256",
            "evidence_size",
            "evidence_members",
            "reset_mode",
            "reset_backup",
            "reset_drop_outside_links",
            "notes",
            "resolution",
            "closed_by_name",
            "next_step",
            "retry",
            "events",
            "report",
            "evidence",
        ]
        read_only_fields = fields

    def get_next_step(self, incident: Incident) -> str | None:
        return NEXT.get(incident.step) if incident.state == Incident.State.DONE else None

    def get_retry(self, incident: Incident) -> str | None:
        failed = incident.state == Incident.State.FAILED and incident.step != Incident.Step.CLOSE
        return incident.step if failed else None

    def get_report(self, incident: Incident) -> dict[str, str]:
        return {"markdown": f"/api/v1/incidents/{incident.pk}/report.md", "html": f"/api/v1/incidents/{incident.pk}/report.html"}

    def get_evidence(self, incident: Incident) -> str | None:
        return f"/api/v1/incidents/{incident.pk}/evidence/" if incident.evidence_file else None


class IncidentPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = IncidentSerializer(many=True)


class IncidentFilter(StrictSerializer):
    sandbox = serializers.IntegerField(required=False, min_value=1, max_value=BIG)
    team = serializers.IntegerField(required=False, min_value=1, max_value=BIG)
    open = serializers.BooleanField(required=False, allow_null=True, default=None, help_text="true: open ones only; false: closed ones.")
    page = serializers.IntegerField(required=False, min_value=1, max_value=100_000)


class DeclareSerializer(StrictSerializer):
    """The sandbox page's Declare an incident."""

    sandbox = serializers.IntegerField(min_value=1, max_value=BIG, help_text="The sandbox's id; you need the operator role.")
    severity = serializers.ChoiceField(choices=Incident.Severity.choices)
    summary = serializers.CharField(max_length=5000, help_text="What was seen.")


STEPS = [s for s in Incident.Step.values if s != Incident.Step.CLOSE]


class StepSerializer(StrictSerializer):
    """The wizard's next step (or a failed one again); close has its own endpoint."""

    step = serializers.ChoiceField(choices=STEPS)
    reset_mode = serializers.ChoiceField(choices=Incident.ResetMode.choices, required=False, help_text="step=reset: how.")
    reset_backup = serializers.IntegerField(
        required=False, min_value=1, max_value=BIG, help_text="reset_mode=restore: a finished backup of this sandbox."
    )
    drop_outside_links = serializers.BooleanField(required=False, default=False)


class CloseSerializer(StrictSerializer):
    resolution = serializers.CharField(max_length=200)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=20000, default="")


class IncidentAcceptedSerializer(serializers.Serializer):
    url = serializers.CharField()
    incident = IncidentDetailSerializer()
