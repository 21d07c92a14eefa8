"""Changing who is in a team. Team admins only; a team always keeps at least one admin."""

from django.db import transaction

from audit.services import audit_record
from controlpanel.db import serialise

from .models import Membership, Team
from .permissions import Role, authorize


class TeamError(Exception):
    """A change that cannot be made; the message is shown to the user."""


def audit_team(actor, action: str, team: Team, details: dict | None = None, source_ip: str | None = None) -> None:
    """An audit event about `team` (its members, its rules, its secrets)."""
    audit_record(actor=actor, action=action, target=team.slug, team_id=team.pk, details=details, source_ip=source_ip)


def _other_admins(team: Team, user) -> bool:
    return Membership.objects.filter(team=team, role=Role.ADMIN).exclude(user=user).exists()


def membership_set(*, actor, team: Team, user, role: str, source_ip: str | None = None) -> Membership:
    """Add `user` to `team` with `role`, or change their role."""
    authorize(actor, team, Role.ADMIN)
    if role not in Role.values:
        raise TeamError(f"Unknown role {role!r}.")
    with transaction.atomic():
        serialise(f"team-{team.pk}")
        membership = Membership.objects.filter(team=team, user=user).first()
        before = membership.role if membership else None
        if before == role and membership is not None:
            return membership
        if before == Role.ADMIN and not _other_admins(team, user):
            raise TeamError(f"{user.get_username()} is the last admin of {team}; make someone else admin first.")
        if membership is None:
            membership = Membership.objects.create(team=team, user=user, role=role)
        else:
            membership.role = role
            membership.save(update_fields=["role"])  # save(), not update(): its signal tells the user's open sockets
        audit_team(actor, "team.member_set", team, {"user": user.get_username(), "from": before, "to": role}, source_ip)
    return membership


def membership_remove(*, actor, team: Team, user, source_ip: str | None = None) -> None:
    """Remove `user` from `team`; the last admin cannot be removed."""
    authorize(actor, team, Role.ADMIN)
    with transaction.atomic():
        serialise(f"team-{team.pk}")
        membership = Membership.objects.filter(team=team, user=user).first()
        if membership is None:
            return
        if membership.role == Role.ADMIN and not _other_admins(team, user):
            raise TeamError(f"{user.get_username()} is the last admin of {team}; make someone else admin first.")
        membership.delete()
        audit_team(actor, "team.member_removed", team, {"user": user.get_username(), "role": membership.role}, source_ip)


def second_factor_require(*, actor, team: Team, required: bool, source_ip: str | None = None) -> bool:
    """Require (or stop requiring) a second factor of every member (team admins), audited when it
    changes. Returns whether it changed (setting what is already set writes nothing)."""
    authorize(actor, team, Role.ADMIN)
    with transaction.atomic():
        changed = bool(Team.objects.filter(pk=team.pk).exclude(require_second_factor=required).update(require_second_factor=required))
        if changed:
            audit_team(actor, "team.second_factor_required" if required else "team.second_factor_optional", team, source_ip=source_ip)
    team.require_second_factor = required
    return changed
