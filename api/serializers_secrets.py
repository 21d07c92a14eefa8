"""Secrets by name and metadata only. A value goes in (SecretSetSerializer, write-only) and
never comes out: no serializer here has a field that reads it."""

from rest_framework import serializers

from sandboxes.models import Secret
from sandboxes.secrets import MAX_VALUE_BYTES

from .serializers import StrictSerializer


class SecretSerializer(serializers.ModelSerializer):
    class Meta:
        model = Secret
        fields = ["id", "name", "delivery", "enabled", "created_at", "rotated_at"]
        read_only_fields = fields


class SandboxSecretsSerializer(serializers.Serializer):
    secrets = SecretSerializer(many=True, help_text="The sandbox's own (over the team's of the same name).")
    team_secrets = SecretSerializer(many=True, help_text="Its team's, handed to every sandbox of the team.")


class SecretSetSerializer(StrictSerializer):
    name = serializers.CharField(max_length=128)
    value = serializers.CharField(
        write_only=True,
        trim_whitespace=False,
        max_length=MAX_VALUE_BYTES,
        style={"input_type": "password"},
        help_text="Never returned, logged or audited.",
    )
    delivery = serializers.ChoiceField(choices=Secret.Delivery.choices, default=Secret.Delivery.ENV)


class SecretChangeSerializer(StrictSerializer):
    enabled = serializers.BooleanField(required=False, help_text="Disable (false) or enable (true): the next start applies it.")
    value = serializers.CharField(
        write_only=True, required=False, trim_whitespace=False, max_length=MAX_VALUE_BYTES, help_text="Rotate: a new value."
    )
    delivery = serializers.ChoiceField(choices=Secret.Delivery.choices, required=False, help_text="With a new value only.")

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Send enabled, or a new value (with its delivery, if it changes).")
        if "delivery" in attrs and "value" not in attrs:
            raise serializers.ValidationError({"delivery": ["A secret's delivery changes with a new value (rotate)."]})
        return attrs


class SecretSetResult(serializers.Serializer):
    secret = SecretSerializer()
    created = serializers.BooleanField(help_text="False: one of that name was there, and has the new value now (rotated).")
