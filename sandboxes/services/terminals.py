"""Browser terminals: who opened one into which sandbox, when, and for how long. Keystrokes are
never recorded."""

import logging
import os
import socket

from django.db import transaction
from django.utils import timezone

from hosts.models import Host
from teams.permissions import Role, SystemActor, actor_name, authorize

from .. import engine
from ..models import Sandbox, TerminalSession
from .auditing import audit
from .errors import SandboxError
from .hosting import host_problem

log = logging.getLogger(__name__)


def terminal_open(*, actor, sandbox: Sandbox, source_ip: str | None = None) -> TerminalSession:
    """Record a terminal being opened (operators and above, a running sandbox only)."""
    authorize(actor, sandbox.team, Role.OPERATOR)
    if problem := host_problem(sandbox):
        raise SandboxError(problem)
    if sandbox.status != Sandbox.Status.RUNNING or not sandbox.container_id:
        raise SandboxError(f"{sandbox.name} is {sandbox.status}: a terminal needs a running sandbox.")
    with transaction.atomic():
        session = TerminalSession.objects.create(sandbox=sandbox, user=actor, user_name=actor_name(actor), source_ip=source_ip)
        audit(actor, "terminal.open", sandbox, {"session": session.pk}, source_ip)
    return session


def terminal_started(*, session: TerminalSession, exec_id: str, server: str = "") -> None:
    TerminalSession.objects.filter(pk=session.pk).update(exec_id=exec_id, server=server)


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]  # field 22: when the process started
    except (OSError, IndexError):
        return None


def this_server() -> str:
    """This process, as "host:pid:start time" (a pid reused later does not match)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _server_alive(server: str) -> bool:
    host, _, rest = server.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's: it answers for its own sessions
    return _start_time(int(pid)) == started


def close_orphan_terminals(*, host_name: str | None = None) -> int:
    """Close the sessions (into `host_name`'s sandboxes; None: every host's) whose server
    process is gone (killed: it could not close them) and hang up their shells, which Docker
    would otherwise keep running."""
    closed = 0
    sessions = TerminalSession.objects.filter(ended_at__isnull=True).exclude(server="")
    if host_name is not None:
        sessions = sessions.filter(sandbox__host__name=host_name)
    for session in sessions.select_related("sandbox"):
        if _server_alive(session.server):
            continue
        if session.exec_id:
            end_shell(sandbox=session.sandbox, exec_id=session.exec_id)
        terminal_close(session=session, reason="the panel's websocket server stopped")
        closed += 1
    return closed


def end_shell(*, sandbox: Sandbox, exec_id: str) -> None:
    """Hang up a terminal's shell (Docker keeps an exec running when its client goes away): here
    when the sandbox's engine runs on this machine (its processes are ours to signal), else by
    its host's agent, on that host's queue, where they are. An engine another machine serves with
    no agent of the panel's (a TLS endpoint alone) keeps it running until the shell exits."""
    if not sandbox.container_id:
        return  # no container: no shell either
    try:
        if engine.engine_for(sandbox).end_terminal(exec_id, container_id=sandbox.container_id):
            return
    except engine.EngineError:
        return  # the sandbox is gone, and the shell with it
    host = Host.objects.filter(sandboxes=sandbox, agent=True).values_list("name", flat=True).first()
    if host is None:
        return
    from ..tasks import terminal_end_task  # tasks import services; import here to avoid a cycle

    try:
        terminal_end_task.delay(host, exec_id, sandbox.pk)
    except Exception as exc:  # noqa: BLE001 - kombu raises several types for "broker down"
        log.warning("could not ask host %s to hang up terminal %s: %s", host, exec_id[:12], exc)


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
                session.source_ip,  # where the terminal was used from, as its opening records
            )
