"""Where each task goes: every host has its own queues, read only by the workers that serve it.

- `ccpanel-<instance>-host-<name>`: its lifecycle actions, incident steps and snapshots, and its
  share of the periodic work (hosts.periodic);
- `ccpanel-<instance>-host-<name>-jobs`: its long jobs (backups, restores, verifies, imports), so
  that however many run, a Stop still finds a free worker.

Webhook deliveries go to `ccpanel-<instance>-webhooks`, read by the panel machine's webhooks
worker only: a receiver (chosen by a team admin) that answers slowly holds that worker, never one
a Stop or an incident's freeze needs.

Tasks that touch no host (the audit chain's check, the repairs that only write the database, the
sweeps that only queue) stay on the default queue `ccpanel-<instance>`, read by the panel
machine's lifecycle worker. A task whose row is gone goes there too: it finds nothing and ends.

Who reads what (`worker_queues`, printed by `manage.py host queues lifecycle|jobs` for the
Procfiles): a host agent (PANEL_HOST_AGENT) reads its own host's queues only. The panel's
machine reads the default queue, the old jobs queue `ccpanel-<instance>-jobs` (jobs with no
sandbox, and any queued before an upgrade), and the queues of its own host (PANEL_HOST) and of
every host no agent serves: those engines are reached from here (another socket, a URL), as
before hosts had queues. A host added while the workers run is added to them (`tell_panel_workers`).
"""

import logging
import socket
from collections.abc import Callable
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

LIFECYCLE, JOBS, WEBHOOKS = "lifecycle", "jobs", "webhooks"
JOBS_SUFFIX = "-jobs"  # a host name may not end so: its queue would be another host's jobs queue


def lifecycle_queue(host_name: str) -> str:
    return f"{settings.CELERY_TASK_DEFAULT_QUEUE}-host-{host_name}"


def jobs_queue(host_name: str) -> str:
    return f"{lifecycle_queue(host_name)}{JOBS_SUFFIX}"


def queue_of(host_name: str, kind: str) -> str:
    return jobs_queue(host_name) if kind == JOBS else lifecycle_queue(host_name)


# --- the router ---------------------------------------------------------------------------------

_GONE = object()  # the row the task is about no longer exists


def _arg(args: Any, kwargs: Any, index: int, name: str) -> Any:
    if args and len(args) > index:
        return args[index]
    return (kwargs or {}).get(name)


def _sandbox_host(pk: Any) -> Any:
    from sandboxes.models import Sandbox

    found = Sandbox.objects.filter(pk=pk).values_list("host__name", flat=True).first()
    return _GONE if found is None else found


def _backup_host(pk: Any) -> Any:
    """The host of a backup's sandbox; None for a backup of none (an imported archive): the
    panel's own jobs queue, where its file is."""
    from backups.models import Backup

    found = Backup.objects.filter(pk=pk).values_list("pk", "sandbox__host__name").first()
    return _GONE if found is None else found[1]


def _restore_host(pk: Any) -> Any:
    from backups.models import Restore

    found = Restore.objects.filter(pk=pk).values_list("sandbox__host__name", flat=True).first()
    return _GONE if found is None else found


def _incident_host(pk: Any) -> Any:
    from incidents.models import Incident

    found = Incident.objects.filter(pk=pk).values_list("sandbox__host__name", flat=True).first()
    return _GONE if found is None else found


# task name -> (queue kind, the index and name of the argument it routes by, how to find the host)
_BY_ROW: dict[str, tuple[str, int, str, Callable[[Any], Any]]] = {
    "sandboxes.tasks.sandbox_action_task": (LIFECYCLE, 0, "sandbox_id", _sandbox_host),
    "backups.tasks.backup_task": (JOBS, 0, "backup_id", _backup_host),
    "backups.tasks.backup_verify_task": (JOBS, 0, "backup_id", _backup_host),
    "backups.tasks.backup_import_task": (JOBS, 0, "backup_id", _backup_host),
    "backups.tasks.backup_stage_task": (JOBS, 0, "backup_id", _backup_host),
    "backups.tasks.restore_task": (JOBS, 0, "restore_id", _restore_host),
    "incidents.tasks.incident_step_task": (LIFECYCLE, 0, "incident_id", _incident_host),
    "incidents.tasks.incident_job_task": (JOBS, 0, "incident_id", _incident_host),
}
# Tasks given their host's name (no query): the periodic work's per-host halves, a freeze's
# snapshots (evidence archives one after another: a job).
_BY_NAME: dict[str, tuple[str, int, str]] = {
    "sandboxes.tasks.host_reconcile_task": (LIFECYCLE, 0, "host_name"),
    "sandboxes.tasks.host_checklist_task": (LIFECYCLE, 0, "host_name"),
    "sandboxes.tasks.warm_fill_task": (LIFECYCLE, 0, "host_name"),
    "sandboxes.tasks.terminal_end_task": (LIFECYCLE, 0, "host_name"),
    "incidents.tasks.incident_group_snapshot_task": (JOBS, 1, "host_name"),
    "webhooks.tasks.host_quota_watch_task": (LIFECYCLE, 0, "host_name"),
}


WEBHOOK_DELIVERY_TASK = "webhooks.tasks.delivery_task"
MOVE_TASK = "sandboxes.tasks.move_task"


def _move_queue(move_id: Any, step: Any) -> str:
    """A move's step (sandboxes.services.moves): the archive and the clean-up on the source
    host's jobs queue, the restore on the target's, and the transfer on the panel's own jobs
    queue (its machine reaches every host's engine; an agent reaches only its own)."""
    from sandboxes.models import Move

    found = Move.objects.filter(pk=move_id).values_list("source__name", "target__name").first()
    if found is None:
        return settings.CELERY_TASK_DEFAULT_QUEUE
    if step == Move.Step.TRANSFER:
        return settings.CELERY_JOBS_QUEUE
    return jobs_queue(found[1] if step == Move.Step.RESTORE else found[0])


def route_task(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_kw: Any) -> dict[str, str] | None:
    """Celery's router (CELERY_TASK_ROUTES): the queue of the host a task is about; None (the
    default queue) for a task about no host; a webhook's delivery to the webhooks' own queue
    (a slow receiver holds only that worker). One query at most."""
    if name == WEBHOOK_DELIVERY_TASK:
        return {"queue": settings.CELERY_WEBHOOKS_QUEUE}
    if name == MOVE_TASK:
        return {"queue": _move_queue(_arg(args, kwargs, 0, "move_id"), _arg(args, kwargs, 1, "step"))}
    if name in _BY_NAME:
        kind, index, arg = _BY_NAME[name]
        host_name = _arg(args, kwargs, index, arg)
        return {"queue": queue_of(host_name, kind)} if host_name else None
    rule = _BY_ROW.get(name)
    if rule is None:
        return None
    kind, index, arg, find = rule
    host_name = find(_arg(args, kwargs, index, arg))
    if host_name is _GONE:
        return {"queue": settings.CELERY_TASK_DEFAULT_QUEUE}
    if host_name is None:  # a job about no sandbox: the panel's own jobs queue
        return {"queue": settings.CELERY_JOBS_QUEUE}
    return {"queue": queue_of(host_name, kind)}


# --- who reads which queue ----------------------------------------------------------------------


def served_here() -> list[str]:
    """The hosts this machine's workers serve: PANEL_HOST, and on the panel's machine every host
    no agent serves (their engines are reached from here). Without a database yet: PANEL_HOST."""
    me = settings.PANEL_HOST
    if settings.PANEL_HOST_AGENT:
        return [me]
    from django.db import DatabaseError

    from .models import Host

    try:
        others = list(Host.objects.filter(agent=False).exclude(name=me).values_list("name", flat=True))
    except DatabaseError:
        others = []
    return [me, *sorted(others)]


def serves(host_name: str) -> bool:
    """Whether this process may do `host_name`'s work: its own host (PANEL_HOST), or, on the
    panel's machine, a host that no agent serves. A worker knows which host it is from its
    environment: PANEL_HOST (and PANEL_HOST_AGENT on an agent's machine, from var/host.env)."""
    if host_name == settings.PANEL_HOST:
        return True
    if settings.PANEL_HOST_AGENT:
        return False
    from .models import Host

    return Host.objects.filter(name=host_name, agent=False).exists()


def worker_queues(role: str) -> list[str]:
    """The queues a worker of `role` (lifecycle, jobs, or webhooks: the panel's machine only,
    which holds the secrets key that signs them) reads on this machine."""
    if role not in (LIFECYCLE, JOBS, WEBHOOKS):
        raise ValueError(f"role is {LIFECYCLE}, {JOBS} or {WEBHOOKS}, not {role!r}")
    if role == WEBHOOKS:
        if settings.PANEL_HOST_AGENT:
            raise ValueError("webhooks are delivered from the panel's machine, not by a host agent")
        return [settings.CELERY_WEBHOOKS_QUEUE]
    hosts = served_here()
    if role == LIFECYCLE:
        own = [lifecycle_queue(h) for h in hosts]
        return own if settings.PANEL_HOST_AGENT else [settings.CELERY_TASK_DEFAULT_QUEUE, *own]
    own = [jobs_queue(h) for h in hosts]
    return own if settings.PANEL_HOST_AGENT else [*own, settings.CELERY_JOBS_QUEUE]


def panel_worker_names() -> list[str]:
    """The node names of the panel machine's workers (the Procfile's -n)."""
    machine = socket.gethostname()
    return [f"{LIFECYCLE}@{machine}", f"{JOBS}@{machine}"]


def tell_panel_workers(host_name: str) -> None:
    """A host no agent serves was added: the panel's running workers start reading its queues
    (Celery's add_consumer, sent to them by name; no reply awaited). A worker that misses it
    reads them from its next start, when worker_queues lists them."""
    from controlpanel.celery import app

    lifecycle, jobs = panel_worker_names()
    try:
        app.control.add_consumer(lifecycle_queue(host_name), destination=[lifecycle], reply=False)
        app.control.add_consumer(jobs_queue(host_name), destination=[jobs], reply=False)
    except Exception as exc:  # noqa: BLE001 - kombu raises several types for "broker down"
        log.warning("could not tell the workers about host %s (they read its queues from their next start): %s", host_name, exc)
