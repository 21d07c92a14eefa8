"""Browser terminals: who opened one into which sandbox, when, and for how long. Keystrokes are
never recorded."""

from django.db import transaction
from django.utils import timezone

from teams.permissions import Role, SystemActor, actor_name, authorize

from ..models import Sandbox, TerminalSession
from .common import SandboxError, audit


def terminal_open(*, actor, sandbox: Sandbox, source_ip: str | None = None) -> TerminalSession:
    """Record a terminal being opened (operators and above, a running sandbox only)."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    if sandbox.status != Sandbox.Status.RUNNING or not sandbox.container_id:
        raise SandboxError(f"{sandbox.name} is {sandbox.status}: a terminal needs a running sandbox.")
    with transaction.atomic():
        session = TerminalSession.objects.create(sandbox=sandbox, user=actor, user_name=actor_name(actor), source_ip=source_ip)
        audit(actor, "terminal.open", sandbox, {"session": session.pk}, source_ip)
    return session


def terminal_started(*, session: TerminalSession, exec_id: str) -> None:
    TerminalSession.objects.filter(pk=session.pk).update(exec_id=exec_id)


def terminal_close(*, session: TerminalSession, reason: str) -> None:
    """Record the end of a terminal session (once; a second call changes nothing)."""
    with transaction.atomic():
        ended = timezone.now()
        if TerminalSession.objects.filter(pk=session.pk, ended_at__isnull=True).update(ended_at=ended, end_reason=reason[:200]):
            seconds = int((ended - session.started_at).total_seconds())
            sandbox = Sandbox.objects.get(pk=session.sandbox_id)
            audit(
                session.user or SystemActor(session.user_name),
                "terminal.close",
                sandbox,
                {"session": session.pk, "seconds": seconds, "reason": reason[:200]},
            )
