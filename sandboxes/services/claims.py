"""Claims: how one action at a time gets a sandbox, and how every claim ends.

`claim()` takes the sandbox for an action with a guarded update of `pending_action` (only from
the allowed statuses, and only if nothing else holds it, unless the action preempts). The worker
that carries the action out takes the *run* (`take_run`: one worker at a time, a heartbeat while
it works), and `finish()` releases the claim with the outcome. Backups, incidents and restores
claim a sandbox the same way as the lifecycle actions.
"""

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from controlpanel.queue import QUEUE_DOWN, Queued, enqueue_on_commit
from teams.permissions import SystemActor

from .. import live
from ..models import Sandbox
from .auditing import audit
from .errors import NotQueued, SandboxError

log = logging.getLogger(__name__)
S = Sandbox.Status


def claimed(sandbox: Sandbox, action: str):
    """The sandbox's row, as long as `action` still holds it (for guarded updates)."""
    return Sandbox.objects.filter(pk=sandbox.pk, pending_action=action)


def claim(
    *,
    sandbox: Sandbox,
    action: str,
    allowed_from: Iterable[str],
    preempts: bool = False,
    status: str | None = None,
    while_on_hold: bool = False,
) -> dict[str, str]:
    """Take `sandbox` for `action`; return its status and pending action from before. Call inside
    a transaction. Raises SandboxError saying why when it cannot be taken now. A preempting
    action (Destroy) takes the sandbox even from another action whose task is stuck. A sandbox
    that an open incident holds is taken only by a job that says `while_on_hold` (the
    incident's own steps, and backups, which only read)."""
    changes: dict = {"pending_action": action, "claimed_at": timezone.now(), "heartbeat_at": None, "attempts": 0}
    if status:
        changes["status"] = status
    rows = Sandbox.objects.filter(pk=sandbox.pk, status__in=list(allowed_from))
    if not while_on_hold:
        rows = rows.filter(on_hold=False)
    rows = rows.exclude(pending_action=action) if preempts else rows.filter(pending_action="")
    found = rows.values("status", "pending_action").first()
    before = {k: str(v) for k, v in found.items()} if found is not None else None
    if before is None or not rows.update(**changes):
        current = Sandbox.objects.filter(pk=sandbox.pk).values("status", "pending_action", "on_hold").first()
        if current is None:
            raise SandboxError("That sandbox no longer exists.")
        if current["on_hold"] and not while_on_hold:
            raise SandboxError(f"{sandbox.name} is held by an open incident; its steps run from the incident's page until it is closed.")
        if current["pending_action"]:
            raise SandboxError(f"{sandbox.name} is busy ({current['pending_action']} in progress); try again shortly.")
        raise SandboxError(f"Cannot {action} {sandbox.name} while it is {current['status']}.")
    return before


def enqueue(sandbox_id: int, action: str, previous_status: str) -> Queued:
    """Queue the task once the claim is committed. If the queue (Redis) cannot take it, release
    the claim with the reason instead of leaving the sandbox "in progress" forever, and say so
    in what this returns (see NotQueued)."""
    from ..tasks import sandbox_action_task  # tasks import services; import here to avoid a cycle

    def refused():
        sandbox = Sandbox.objects.filter(pk=sandbox_id).first()
        if sandbox is not None:
            status = S.ERROR if previous_status in (S.CREATING, S.DESTROYING) else previous_status
            finish(sandbox, action, status, str(NotQueued(action, QUEUE_DOWN)))

    return enqueue_on_commit(sandbox_action_task, sandbox_id, action, what=f"{action} for sandbox {sandbox_id}", on_refused=refused)


def take_run(sandbox_id: int, action: str) -> Sandbox | None:
    """Take the run of a claimed action: only when nobody runs it, or its runner's heartbeat has
    stopped. Returns the sandbox, or None (done already, or a live worker is on it)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.SANDBOX_STALE_SECONDS)
    taken = (
        Sandbox.objects.filter(pk=sandbox_id, pending_action=action)
        .filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale))
        .update(heartbeat_at=now, attempts=F("attempts") + 1)
    )
    return Sandbox.objects.select_related("team").filter(pk=sandbox_id, pending_action=action).first() if taken else None


@contextmanager
def heartbeat(sandbox_id: int, action: str) -> Iterator[None]:
    """While the body runs, write `heartbeat_at` every few seconds from a thread: a claim whose
    heartbeat stops has lost its worker (see requeue_stale_actions)."""
    with beating(
        lambda: Sandbox.objects.filter(pk=sandbox_id, pending_action=action).update(heartbeat_at=timezone.now()), f"sandbox {sandbox_id}"
    ):
        yield


@contextmanager
def beating(beat_once: Callable[[], int], what: str) -> Iterator[None]:
    """While the body runs, call `beat_once` (a guarded update of a heartbeat; it returns the
    rows it changed) every SANDBOX_HEARTBEAT_SECONDS from a thread, until it changes nothing
    (the claim or the job is gone). Also the heartbeat of a backup reading its snapshot."""
    stop = threading.Event()

    def beat():
        try:
            while not stop.wait(settings.SANDBOX_HEARTBEAT_SECONDS):
                try:
                    if not beat_once():
                        return  # the claim is gone (finished, or taken over by Destroy)
                except Exception:  # a missed beat is retried at the next tick, never fatal
                    log.warning("heartbeat for %s missed; retrying", what, exc_info=True)
                    connection.close()
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)


def finish(sandbox: Sandbox, action: str, status: str | None, detail: str, *, outcome: str = "failed", audited: bool = True) -> bool:
    """Release `action`'s claim on `sandbox` with its outcome ("done", "failed" or "refused", as
    the audit event says); False if the claim was no longer this action's. `status` None keeps
    the status (a backup changes nothing); `audited` False when the job audits its own end."""
    changes = {"pending_action": "", "status_detail": detail, "heartbeat_at": None}
    if status is not None:
        changes["status"] = status
    with transaction.atomic():
        done = claimed(sandbox, action).update(**changes)
        if done and audited:
            audit(SystemActor("system"), f"sandbox.{action}.{outcome}", sandbox, {"status": status, "detail": detail})
        if done:
            live.sandbox_changed(sandbox)
    if detail and outcome != "done":
        log.warning("%s %s: %s", action, sandbox.name, detail)
    return bool(done)


# How a claim whose worker is gone is queued again, by what holds it: the lifecycle actions queue
# sandbox_action_task; the backups and incidents apps register their jobs here (AppConfig.ready).
RESUMERS: dict[str, Callable[[Sandbox], None]] = {}


def register_resumer(job: str, resume: Callable[[Sandbox], None]) -> None:
    RESUMERS[job] = resume


# What Destroy stops first: the long jobs of other apps that run without the sandbox's claim (a
# backup reading its snapshot), registered in their AppConfig.ready.
CANCELLERS: list[Callable[[Sandbox], None]] = []


# What the periodic resync also runs: other apps' repairs of their own long jobs (a backup whose
# reader died), registered in their AppConfig.ready.
REPAIRERS: list[Callable[[], object]] = []


def register_repairer(repair: Callable[[], object]) -> None:
    if repair not in REPAIRERS:
        REPAIRERS.append(repair)


def register_canceller(cancel: Callable[[Sandbox], None]) -> None:
    if cancel not in CANCELLERS:
        CANCELLERS.append(cancel)


def requeue_stale_actions() -> int:
    """Queue again the actions whose worker is gone: never started within SANDBOX_STALE_SECONDS
    of being claimed (the task was lost, say Redis restarted), or whose runner's heartbeat
    stopped (the worker died). A run is taken by one worker at a time (see take_run), so a
    duplicate is harmless; after SANDBOX_MAX_ATTEMPTS dead runs the action ends in `error` (a
    job of another app is given up by its own run, which knows what to record)."""
    from ..tasks import sandbox_action_task

    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.SANDBOX_STALE_SECONDS)
    stale = Sandbox.objects.exclude(pending_action="").filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, claimed_at__lt=cutoff)
    )
    requeued = 0
    for sandbox in stale:
        action = sandbox.pending_action
        if sandbox.heartbeat_at is not None and sandbox.attempts >= settings.SANDBOX_MAX_ATTEMPTS and action not in RESUMERS:
            finish(
                sandbox,
                action,
                S.ERROR,
                f"{action} was given up after {sandbox.attempts} attempts: its worker stopped each time before it finished.",
            )
            continue
        guard = Q(heartbeat_at=sandbox.heartbeat_at) if sandbox.heartbeat_at else Q(heartbeat_at__isnull=True)
        if claimed(sandbox, action).filter(guard, claimed_at=sandbox.claimed_at).update(claimed_at=now):
            log.warning("re-queueing %s for sandbox %s: its worker is gone", action, sandbox.name)
            if action in RESUMERS:
                RESUMERS[action](sandbox)
            else:
                sandbox_action_task.delay(sandbox.pk, action)
            requeued += 1
    return requeued
