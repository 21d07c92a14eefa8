"""What the API reads and answers. Serializers parse and shape; they decide no rule: every rule
is the services' (sandbox_create, sandbox_request_action), as for the forms."""

from django.conf import settings
from rest_framework import serializers

from hosts.health import unreachable_reason
from hosts.models import Host
from sandboxes.models import Mount, Sandbox
from sandboxes.network.allowlist import PRESETS

BIG = 2**62  # larger numbers are refused here, before any database sees them


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know (a typo must not pass silently as a default)."""

    def to_internal_value(self, data):
        if isinstance(data, dict) and (unknown := sorted(set(data) - set(self.fields))):
            raise serializers.ValidationError({str(name)[:100]: ["Unknown field."] for name in unknown[:20]})
        return super().to_internal_value(data)


class TeamRef(serializers.Serializer):
    id = serializers.IntegerField(source="team_id")
    name = serializers.CharField(source="team.name")


class SandboxSerializer(serializers.ModelSerializer):
    """A sandbox as the dashboard lists it (only the columns its query loads)."""

    team = TeamRef(source="*")
    host = serializers.CharField(source="host.name")
    cpus = serializers.DecimalField(max_digits=5, decimal_places=2, coerce_to_string=True)
    pending_action = serializers.ChoiceField(
        choices=Sandbox.Action.choices + Sandbox.Job.choices, allow_blank=True, help_text="What holds it now; empty when idle."
    )
    unreachable = serializers.SerializerMethodField(
        help_text="Why its host does not answer (its status is as last seen; no action is taken); empty when it answers."
    )
    actions = serializers.SerializerMethodField(help_text="The lifecycle actions you may ask for now, through this token.")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Sandbox
        fields = [
            "id",
            "name",
            "team",
            "host",
            "status",
            "pending_action",
            "status_detail",
            "on_hold",
            "image",
            "memory_mb",
            "cpus",
            "network_mode",
            "health",
            "oom_kills",
            "checklist_failed",
            "unreachable",
            "actions",
            "url",
        ]
        read_only_fields = fields

    def get_unreachable(self, sandbox: Sandbox) -> str:
        return unreachable_reason(sandbox.host)

    def get_actions(self, sandbox: Sandbox) -> list[str]:
        return self.context["actions_of"](sandbox)

    def get_url(self, sandbox: Sandbox) -> str:
        return f"/api/v1/sandboxes/{sandbox.pk}/"


def sandbox_rows(rows: list[dict], *, actions_of) -> list[dict]:
    """The list's rows as SandboxSerializer answers them, built from the values the dashboard's
    query reads (selectors.sandbox_page(values=True)): DRF's field by field path over model
    objects was half of a list request's CPU (50 rows a page). The serializer stays the schema;
    tests/api/test_sandboxes.py checks that both answer alike for every kind of row."""
    hosts: dict[int, str] = {}
    out = []
    for row in rows:
        if (unreachable := hosts.get(row["host_id"])) is None:
            host = Host(
                pk=row["host_id"], name=row["host__name"], last_heartbeat=row["host__last_heartbeat"], last_error=row["host__last_error"]
            )
            unreachable = hosts[row["host_id"]] = unreachable_reason(host)
        out.append(
            {
                "id": row["id"],
                "name": row["name"],
                "team": {"id": row["team_id"], "name": row["team__name"]},
                "host": row["host__name"],
                "status": row["status"],
                "pending_action": row["pending_action"],
                "status_detail": row["status_detail"],
                "on_hold": row["on_hold"],
                "image": row["image"],
                "memory_mb": row["memory_mb"],
                "cpus": f"{row['cpus']:.2f}",
                "network_mode": row["network_mode"],
                "health": row["health"],
                "oom_kills": row["oom_kills"],
                "checklist_failed": row["checklist_failed"],
                "unreachable": unreachable,
                "actions": actions_of(row, unreachable=bool(unreachable)),
                "url": f"/api/v1/sandboxes/{row['id']}/",
            }
        )
    return out


class MountSerializer(StrictSerializer):
    host_path = serializers.CharField(max_length=1024)
    container_path = serializers.CharField(max_length=1024)
    read_only = serializers.BooleanField(default=False)


class MountOut(serializers.ModelSerializer):
    class Meta:
        model = Mount
        fields = ["host_path", "container_path", "read_only"]


class SandboxDetailSerializer(SandboxSerializer):
    mounts = MountOut(many=True, read_only=True)

    class Meta(SandboxSerializer.Meta):
        fields = [
            *SandboxSerializer.Meta.fields,
            "uuid",
            "disk_mb",
            "runtime",
            "read_only_rootfs",
            "low_ports_and_ping",
            "selinux_level",
            "egress_presets",
            "egress_allow",
            "mounts",
            "created_at",
        ]
        read_only_fields = fields


class SandboxPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = SandboxSerializer(many=True)


class SandboxFilter(StrictSerializer):
    """The list's query: every value checked before it reaches the database."""

    team = serializers.IntegerField(required=False, min_value=1, max_value=BIG)
    status = serializers.ChoiceField(required=False, choices=[s for s in Sandbox.Status.values if s != Sandbox.Status.DESTROYED])
    host = serializers.CharField(required=False, max_length=100)
    q = serializers.CharField(required=False, max_length=100, allow_blank=True, help_text="Part of the name.")
    page = serializers.IntegerField(required=False, min_value=1, max_value=100_000)


class SandboxCreateSerializer(StrictSerializer):
    """A new sandbox: the New sandbox form's fields (extra mounts as a list)."""

    team = serializers.IntegerField(min_value=1, max_value=BIG, help_text="The team's id; you need the operator role there.")
    name = serializers.CharField(max_length=200)
    image = serializers.CharField(max_length=300, required=False)
    memory_mb = serializers.IntegerField(required=False, min_value=0, max_value=BIG)
    cpus = serializers.DecimalField(required=False, max_digits=6, decimal_places=2, min_value=0)
    disk_mb = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=BIG)
    network_mode = serializers.ChoiceField(choices=Sandbox.Network.choices, required=False)
    egress_presets = serializers.ListField(child=serializers.ChoiceField(choices=list(PRESETS)), required=False, max_length=len(PRESETS))
    egress_allow = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    runtime = serializers.ChoiceField(choices=Sandbox.Runtime.choices, required=False)
    selinux_level = serializers.CharField(required=False, allow_blank=True, max_length=100)
    writable_root = serializers.BooleanField(required=False, default=False)
    low_ports_and_ping = serializers.BooleanField(required=False, default=False)
    extra_mounts = MountSerializer(many=True, required=False, max_length=20)
    host = serializers.CharField(required=False, allow_null=True, max_length=100)

    def defaults(self) -> dict:
        data = dict(self.validated_data)
        data.setdefault("image", settings.SANDBOX_DEFAULT_IMAGE)
        data.setdefault("memory_mb", settings.SANDBOX_DEFAULT_MEMORY_MB)
        data.setdefault("cpus", settings.SANDBOX_DEFAULT_CPUS)
        data.setdefault("network_mode", Sandbox.Network.INTERNET)
        data.setdefault("runtime", Sandbox.Runtime.RUNC)
        return data


class ActionSerializer(StrictSerializer):
    confirm_name = serializers.CharField(required=False, max_length=200, help_text="Destroy only: the sandbox's name, as on its page.")


class AcceptedSerializer(serializers.Serializer):
    """A request that was taken: its state is at `url` (and pushed on the websocket as today)."""

    url = serializers.CharField()
    queued = serializers.BooleanField(help_text="False: recorded, but the task queue refused the task (see `reason`).")
    reason = serializers.CharField(required=False)
    sandbox = SandboxDetailSerializer()


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class PolicyErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    problems = serializers.ListField(child=serializers.CharField())
