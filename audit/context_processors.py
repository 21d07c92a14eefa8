"""What every page shows about the audit trail: a banner for admins when the chain is broken."""

from django.http import HttpRequest

from teams.permissions import is_any_team_admin

from .selectors import audit_chain_problem


def audit_chain(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not (user.is_superuser or is_any_team_admin(user=user)):
        return {}
    return {"audit_chain_problem": audit_chain_problem()}
