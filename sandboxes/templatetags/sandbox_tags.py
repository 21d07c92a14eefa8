from django import template

from ..models import Sandbox
from ..services import allowed_actions

register = template.Library()

# The row buttons; Destroy has its own confirmation form on the sandbox's page.
BUTTONS = [a for a in Sandbox.Action.values if a != Sandbox.Action.DESTROY]


@register.simple_tag
def sandbox_buttons(sandbox: Sandbox, roles: dict[int, str]) -> list[str]:
    """Exactly the actions the service would accept now from this user (it checks again on submit)."""
    allowed = allowed_actions(sandbox, role=roles.get(sandbox.team_id))
    return [a for a in BUTTONS if a in allowed]


@register.simple_tag
def can_destroy(sandbox: Sandbox, roles: dict[int, str]) -> bool:
    return Sandbox.Action.DESTROY in allowed_actions(sandbox, role=roles.get(sandbox.team_id))


@register.filter
def role_for(roles: dict[int, str], sandbox: Sandbox) -> str:
    return roles.get(sandbox.team_id, "")


@register.filter
def filesizeformat_mb(mb: int) -> str:
    return f"{mb / 1024:g} GB" if mb >= 1024 and mb % 256 == 0 else f"{mb} MB"
