from django import template

from ..models import Sandbox
from ..services import TRANSITIONS

register = template.Library()

# Shown as buttons; destroy has its own confirmation form on the detail page.
BUTTONS = ("start", "stop", "restart", "pause", "unpause", "reset", "clean")


@register.filter
def available_actions(sandbox: Sandbox) -> list[str]:
    """The actions the sandbox's status allows (the service checks again on submit)."""
    return [a for a in BUTTONS if sandbox.status in TRANSITIONS[a].allowed_from
            and not (a == "restart" and sandbox.status == Sandbox.Status.STOPPED)]


@register.filter
def filesizeformat_mb(mb: int) -> str:
    return f"{mb / 1024:g} GB" if mb >= 1024 and mb % 256 == 0 else f"{mb} MB"
