"""Teams and their members, as the team pages show them (never an e-mail or a password)."""

from rest_framework import serializers

from teams.models import Membership

from .serializers import StrictSerializer


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
