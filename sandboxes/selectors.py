"""Reads, always limited to what the given user may see."""

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet

from . import engine, policy
from .models import Sandbox
from .services.common import sandbox_spec

PAGE_TIMEOUT = 5  # seconds a page waits for Docker: a hung engine must not hold a request


def sandbox_list_visible(*, user, include_destroyed: bool = False) -> QuerySet[Sandbox]:
    sandboxes = Sandbox.objects.select_related("team")
    if not include_destroyed:
        sandboxes = sandboxes.exclude(status=Sandbox.Status.DESTROYED)
    if getattr(user, "is_superuser", False):
        return sandboxes
    return sandboxes.filter(team__memberships__user=user).distinct()


def sandbox_get_visible(*, user, pk: int) -> Sandbox | None:
    return sandbox_list_visible(user=user).filter(pk=pk).first()


def sandbox_page(*, user, search: str = "", page: int | str | None = None) -> Page:
    """One page of the dashboard: SANDBOX_PAGE_SIZE sandboxes, by name, filtered by `search`."""
    sandboxes = sandbox_list_visible(user=user).only(
        "pk", "name", "status", "pending_action", "status_detail", "image", "memory_mb", "cpus", "network_mode",
        "team__id", "team__name", "team_id",
    )
    if search:
        sandboxes = sandboxes.filter(name__icontains=search.strip())
    return Paginator(sandboxes, settings.SANDBOX_PAGE_SIZE).get_page(page)


def hardening_report(sandbox: Sandbox) -> list[tuple[str, bool, str]]:
    """The policy read back from Docker and the kernel for the container that runs as this
    sandbox: its recorded container, or any other that carries its name or identity (one made
    by hand outside the panel is reported, and flagged). Empty when no container exists."""
    docker = engine.engine_for(sandbox, timeout=PAGE_TIMEOUT)
    claiming = docker.containers_claiming(name=sandbox.container_name, sandbox_uuid=str(sandbox.uuid))
    if not claiming:
        return []
    inspected = {cid: docker.inspect_container(cid) for cid in claiming}
    # Report on what runs (a stranger that runs matters more than the panel's stopped container).
    shown = sorted(claiming, key=lambda cid: (not inspected[cid]["State"].get("Running"), cid != sandbox.container_id))[0]
    data = inspected[shown]
    processes = docker.process_privileges(shown) if data["State"].get("Running") else None
    strangers = [cid[:12] for cid in claiming if cid != sandbox.container_id]
    report = [("Only the panel's own container claims this sandbox", not strangers,
               f"also {', '.join(strangers)}" if strangers else (sandbox.container_id or "")[:12])]
    return report + policy.inspect_report(data, sandbox_spec(sandbox), processes)


def recent_output(sandbox: Sandbox, *, tail: int = 200) -> str:
    if not sandbox.container_id:
        return ""
    return engine.engine_for(sandbox, timeout=PAGE_TIMEOUT).logs(sandbox.container_id, tail=tail)
