"""Hosts as the Hosts page shows them (health, load, capacity), and join tokens (never their
secret: a new one's text is in the answer that made it, once)."""

from decimal import Decimal

from rest_framework import serializers

from .serializers import BIG, StrictSerializer

HEALTH = ["reachable", "stale", "never_seen", "error"]


class LoadSerializer(serializers.Serializer):
    sandboxes = serializers.IntegerField()
    memory_mb = serializers.IntegerField()
    cpus = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=True)
    disk_mb = serializers.IntegerField()


class HostSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    docker = serializers.CharField(help_text="Where its engine is reached, in words (the page's Docker column).")
    agent = serializers.BooleanField()
    enabled = serializers.BooleanField()
    draining = serializers.BooleanField()
    health = serializers.ChoiceField(choices=HEALTH, help_text="As the events watcher last wrote it; stale past three beats.")
    last_error = serializers.CharField(allow_blank=True)
    last_heartbeat = serializers.DateTimeField(allow_null=True)
    engine_version = serializers.CharField(allow_blank=True)
    cpus = serializers.DecimalField(max_digits=9, decimal_places=2, coerce_to_string=True)
    memory_mb = serializers.IntegerField()
    disk_mb = serializers.IntegerField()
    load = LoadSerializer(help_text="What its live sandboxes reserve of it.")
    pool_free_mb = serializers.IntegerField(allow_null=True, help_text="The storage pool's free space (this machine's engine only).")
    warm_ready = serializers.IntegerField()
    warm_wanted = serializers.IntegerField()
    labels = serializers.ListField(child=serializers.CharField())
    deletable = serializers.BooleanField(help_text="No sandbox row names it (destroyed ones included).")


class HostCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=63, help_text="Lower-case letters, digits and '-'.")
    docker_url = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    cpus = serializers.DecimalField(max_digits=7, decimal_places=2, min_value=Decimal("0.25"), required=False, allow_null=True)
    memory_mb = serializers.IntegerField(min_value=0, max_value=BIG, required=False, allow_null=True)
    disk_mb = serializers.IntegerField(min_value=0, max_value=BIG, required=False, allow_null=True)
    labels = serializers.ListField(child=serializers.CharField(max_length=63), max_length=50, required=False, default=list)


class HostStateSerializer(StrictSerializer):
    enabled = serializers.BooleanField(required=False)
    draining = serializers.BooleanField(required=False)

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Send enabled, draining or both.")
        return attrs


class JoinTokenSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    labels = serializers.ListField(child=serializers.CharField())
    state = serializers.ChoiceField(choices=["waiting", "used", "revoked", "expired"])
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    host = serializers.CharField(allow_null=True, help_text="The host it made, once used.")


class JoinTokenCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=63)
    labels = serializers.ListField(child=serializers.CharField(max_length=63), max_length=50, required=False, default=list)


class JoinTokenMadeSerializer(serializers.Serializer):
    token = JoinTokenSerializer()
    join_token = serializers.CharField(help_text="Shown this once: paste it into `manage.py host join -` on the new machine.")
