"""Secrets by name and metadata only. A value goes in (SecretSetSerializer, write-only) and
never comes out: no serializer here has a field that reads it."""

from rest_framework import serializers

from sandboxes.models import Secret
from sandboxes.secrets import MAX_VALUE_BYTES


class SecretSerializer(serializers.ModelSerializer):
    class Meta:
        model = Secret
        fields = ["id", "name", "delivery", "hosts", "header", "enabled", "created_at", "rotated_at"]
        read_only_fields = fields


class SandboxSecretsSerializer(serializers.Serializer):
    secrets = SecretSerializer(many=True, help_text="The sandbox's own (over the team's of the same name).")
    team_secrets = SecretSerializer(many=True, help_text="Its team's, handed to every sandbox of the team.")


class _NoEcho(serializers.Serializer):
    """Refuses unknown fields as StrictSerializer does, without naming them: a value pasted
    as a key, or into another field, must not come back in the error."""

    def to_internal_value(self, data):
        if isinstance(data, dict) and set(data) - set(self.fields):
            raise serializers.ValidationError({"non_field_errors": [f"Unknown field: send only {', '.join(self.fields)}."]})
        return super().to_internal_value(data)


DELIVERY_ERRORS = {
    "invalid_choice": "Deliver as env (an environment variable), file (in /run/secrets) or proxy (injected by the panel's proxy)."
}
HOSTS_HELP = "Delivery proxy only: the host names the value is sent to, separated by spaces (*.example.com for subdomains)."
HEADER_HELP = "Delivery proxy only: the header that carries the value (x-api-key, or Authorization: Bearer)."


class SecretSetSerializer(_NoEcho):
    name = serializers.CharField(max_length=128)
    value = serializers.CharField(
        write_only=True,
        trim_whitespace=False,
        max_length=MAX_VALUE_BYTES,
        style={"input_type": "password"},
        help_text="Never returned, logged or audited.",
    )
    delivery = serializers.ChoiceField(choices=Secret.Delivery.choices, default=Secret.Delivery.ENV, error_messages=DELIVERY_ERRORS)
    hosts = serializers.CharField(max_length=1000, required=False, default="", allow_blank=True, help_text=HOSTS_HELP)
    header = serializers.CharField(max_length=200, required=False, default="", allow_blank=True, help_text=HEADER_HELP)


class SecretChangeSerializer(_NoEcho):
    enabled = serializers.BooleanField(required=False, help_text="Disable (false) or enable (true): the next start applies it.")
    value = serializers.CharField(
        write_only=True, required=False, trim_whitespace=False, max_length=MAX_VALUE_BYTES, help_text="Rotate: a new value."
    )
    delivery = serializers.ChoiceField(
        choices=Secret.Delivery.choices, required=False, help_text="With a new value only.", error_messages=DELIVERY_ERRORS
    )
    hosts = serializers.CharField(max_length=1000, required=False, allow_blank=True, help_text=HOSTS_HELP + " With a new value only.")
    header = serializers.CharField(max_length=200, required=False, allow_blank=True, help_text=HEADER_HELP + " With a new value only.")

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Send enabled, or a new value (with its delivery, if it changes).")
        for key in ("delivery", "hosts", "header"):
            if key in attrs and "value" not in attrs:
                raise serializers.ValidationError({key: [f"A secret's {key} changes with a new value (rotate)."]})
        return attrs


class SecretSetResult(serializers.Serializer):
    secret = SecretSerializer()
    created = serializers.BooleanField(help_text="False: one of that name was there, and has the new value now (rotated).")
