"""The sandbox page's Storage card: disk use against the quota, the quota itself, checkpoints
and rollback. Thin: every rule is in storage.services."""

from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from controlpanel.http import client_ip
from sandboxes import engine, policy
from sandboxes.models import Sandbox
from sandboxes.selectors import visible_sandbox_or_404
from sandboxes.services import SandboxError
from teams.permissions import Role, user_role

from . import pool, selectors, services
from .models import Checkpoint


def sandbox_storage(request: HttpRequest, pk: int) -> HttpResponse:
    """The card; it reloads itself every few seconds (the use is live)."""
    sandbox = visible_sandbox_or_404(user=request.user, pk=pk)
    role = user_role(user=request.user, team=sandbox.team)
    context = {
        "sandbox": sandbox,
        "usage": selectors.disk_usage(sandbox),
        "pool_active": pool.active(),
        "checkpoints": selectors.checkpoints_of(sandbox) if sandbox.in_pool else [],
        "can_operate": role in (Role.OPERATOR, Role.ADMIN) and sandbox.status != sandbox.Status.DESTROYED,
        "keep_default": settings.SANDBOX_KEEP_CHECKPOINTS,
    }
    return render(request, "storage/_card.html", context)


def _checkpoint(sandbox, checkpoint_pk: int) -> Checkpoint:
    found = Checkpoint.objects.filter(pk=checkpoint_pk, sandbox=sandbox).select_related("sandbox").first()
    if found is None:
        raise Http404("No such checkpoint.")
    return found


def _run(request: HttpRequest, pk: int, step) -> HttpResponse:
    sandbox = visible_sandbox_or_404(user=request.user, pk=pk)
    try:
        said = step(sandbox)
    except (SandboxError, pool.PoolError, engine.EngineError) as exc:
        messages.error(request, str(exc))
    except policy.PolicyViolation as exc:
        messages.error(request, "Refused by the security policy: " + " ".join(exc.problems))
    else:
        messages.success(request, said)
    return redirect("sandbox_detail", pk=pk)


@require_POST
def checkpoint_create(request: HttpRequest, pk: int) -> HttpResponse:
    def step(sandbox):
        made = services.checkpoint_create(
            actor=request.user, sandbox=sandbox, label=request.POST.get("label", ""), source_ip=client_ip(request)
        )
        return f"Checkpoint {made.snapshot} taken."

    return _run(request, pk, step)


def _run_on_checkpoint(request: HttpRequest, pk: int, checkpoint_pk: int, step: Callable[[Sandbox, Checkpoint], str]) -> HttpResponse:
    """_run, for a step on one of the sandbox's checkpoints (404 when it has no such one)."""
    return _run(request, pk, lambda sandbox: step(sandbox, _checkpoint(sandbox, checkpoint_pk)))


@require_POST
def checkpoint_rollback(request: HttpRequest, pk: int, checkpoint_pk: int) -> HttpResponse:
    def step(sandbox: Sandbox, target: Checkpoint) -> str:
        before = services.rollback(actor=request.user, sandbox=sandbox, checkpoint=target, source_ip=client_ip(request))
        return f"Rolled back to {target.snapshot}; what was there is kept as checkpoint {before.snapshot}."

    return _run_on_checkpoint(request, pk, checkpoint_pk, step)


@require_POST
def checkpoint_delete(request: HttpRequest, pk: int, checkpoint_pk: int) -> HttpResponse:
    def step(sandbox: Sandbox, target: Checkpoint) -> str:
        services.checkpoint_delete(actor=request.user, checkpoint=target, source_ip=client_ip(request))
        return f"Deleted checkpoint {target.snapshot}."

    return _run_on_checkpoint(request, pk, checkpoint_pk, step)


def _count(value: str, what: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and len(value) < 7):
        raise services.StorageError(f"{what} is a whole number, or empty.")
    return int(value)


@require_POST
def checkpoint_retention(request: HttpRequest, pk: int) -> HttpResponse:
    def step(sandbox):
        keep_last = _count(request.POST.get("keep_last", ""), "How many checkpoints to keep")
        keep_days = _count(request.POST.get("keep_days", ""), "How many days to keep checkpoints")
        gone = services.checkpoint_retention_set(
            actor=request.user, sandbox=sandbox, keep_last=keep_last, keep_days=keep_days, source_ip=client_ip(request)
        )
        return f"{sandbox.name} keeps its checkpoints by the new rule" + (f"; {gone} went." if gone else ".")

    return _run(request, pk, step)


@require_POST
def disk_quota(request: HttpRequest, pk: int) -> HttpResponse:
    def step(sandbox):
        try:
            disk_mb = int(request.POST.get("disk_mb", ""))
        except ValueError:
            raise services.StorageError("The disk quota is a whole number of MB.") from None
        services.set_disk_quota(actor=request.user, sandbox=sandbox, disk_mb=disk_mb, source_ip=client_ip(request))
        return f"The disk quota of {sandbox.name} is now {disk_mb} MB."

    return _run(request, pk, step)
