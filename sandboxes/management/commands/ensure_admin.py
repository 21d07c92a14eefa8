"""Create the first admin (and the default team) when there is no user; print the password once."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from teams.models import Membership, Team


class Command(BaseCommand):
    help = "Create the first admin user if there is none."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    @transaction.atomic
    def handle(self, *args, username, **opts):
        team, _ = Team.objects.get_or_create(slug="default", defaults={"name": "Default"})
        User = get_user_model()
        if User.objects.exists():
            self.stdout.write("An admin already exists; not creating one.")
            return
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, email="", password=password)
        Membership.objects.create(user=user, team=team, role=Membership.Role.ADMIN)
        bar = "=" * 64
        self.stdout.write(
            self.style.WARNING(
                f"{bar}\n First admin created. Log in at http://127.0.0.1:8000/ with\n"
                f"   user:     {username}\n   password: {password}\n"
                f" This password is shown only now. Change it under Admin → Users.\n{bar}"
            )
        )
