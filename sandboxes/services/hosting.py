"""Whether what is asked of a sandbox outside its actions can be done from this process: its
host answers (hosts.health), and, for the work done here on its folders (uploads, downloads,
checkpoints, rollbacks, disk quotas), its folders are on this machine. An agent's host keeps
them on its own machine: a folder of the same name here is not the sandbox's."""

from hosts.health import unreachable_reason
from hosts.models import Host

from .. import engine
from ..models import Sandbox


def host_problem(sandbox: Sandbox) -> str:
    """Why the sandbox's host cannot be worked on now ("" when it can), read afresh."""
    host = Host.objects.filter(sandboxes=sandbox).first()
    reason = unreachable_reason(host) if host is not None else ""
    return f"{reason} Its sandboxes keep their state and can be acted on again once it answers." if reason else ""


def folders_problem(sandbox: Sandbox) -> str:
    """Why this process cannot reach the sandbox's folders ("" when it can)."""
    if problem := host_problem(sandbox):
        return problem
    if not engine.host_for(sandbox).on_this_machine:
        return (
            f"{sandbox.name} is on host {sandbox.host.name}: its folders are on that machine, not this one, and "
            "files, checkpoints and disk quotas are not handled from here yet (use the CLI on that machine)."
        )
    return ""
