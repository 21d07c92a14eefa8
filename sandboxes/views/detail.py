"""A sandbox's page, and the cards it loads: the recently changed files and the output download."""

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.utils import timezone

from agents.forms import AgentFilterForm
from agents.services import records_prompts
from teams import agent_policy
from teams import idle as idle_rule
from teams.permissions import Role, role_allows, user_role

from .. import activity, engine, health, selectors
from ..forms import DenialFilterForm, DestroyForm
from ..models import Sandbox
from ..rows import row_for
from ..services import moves


def sandbox_detail(request: HttpRequest, pk: int) -> HttpResponse:
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    hardening: list = []
    if sandbox.status != Sandbox.Status.DESTROYED and not health.docker_is_down():
        try:
            hardening = selectors.hardening_report(sandbox)
        except engine.EngineError:
            pass  # the banner says why; the page still shows what the panel knows
    role = user_role(user=request.user, team=sandbox.team)
    movable = role_allows(role, Role.OPERATOR) and sandbox.status != Sandbox.Status.DESTROYED
    context = {
        "sandbox": sandbox,
        "move_targets": moves.move_targets(sandbox) if movable else [],
        "row": row_for(sandbox, role, csrf=get_token(request), back_to_detail=True),
        "hardening": hardening,
        "csrf": get_token(request),
        "destroy_form": DestroyForm(sandbox=sandbox),
        "denial_filter": DenialFilterForm(auto_id="denials-%s"),
        "agent_filter": AgentFilterForm(auto_id="agent-%s"),
        "agent_keep_days": settings.AGENT_EVENTS_KEEP_DAYS,
        "agent_records_prompts": records_prompts(sandbox.team_id),
        "sessions": sandbox.terminal_sessions.all()[:10],
        "open_incident": selectors.open_incident(sandbox),
        "idle_stop": idle_rule.last_idle_stop(sandbox),
        "agent_settings": _agent_settings(sandbox),
    }
    return render(request, "sandboxes/detail.html", context)


def _agent_settings(sandbox: Sandbox) -> dict:
    """The team's policy for Claude Code, read-only (set on the team page by its admins)."""
    wanted = agent_policy.managed_settings_of(sandbox.team)
    return {"text": agent_policy.canonical(wanted).decode() if wanted else "", "digest": agent_policy.digest(wanted) if wanted else ""}


def sandbox_files(request: HttpRequest, pk: int) -> HttpResponse:
    """Files modified in the sandbox's folders lately (read on the host), and what changed in the
    container's own file system (`docker diff`): a partial the page loads and reloads."""
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    window = request.GET.get("within", "1h")
    if window not in activity.WINDOWS:
        window = "1h"
    found, diff, diff_error = selectors.files_changed(sandbox, window)
    context = {
        "sandbox": sandbox,
        "activity": found,
        "window": window,
        "windows": list(activity.WINDOWS),
        "diff": diff,
        "diff_error": diff_error,
    }
    return render(request, "sandboxes/_files.html", context)


def sandbox_logs_download(request: HttpRequest, pk: int) -> HttpResponse | StreamingHttpResponse:
    """The container's whole output, with timestamps and stream, streamed as a text file."""
    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    if not sandbox.container_id:
        raise Http404("This sandbox has no container, so no output.")
    try:
        stream = engine.engine_for(sandbox).log_stream(sandbox.container_id, tail="all", follow=False)
    except engine.EngineError as exc:
        return HttpResponse(f"The output is not available: {exc}\n", status=503, content_type="text/plain; charset=utf-8")

    def lines():
        try:
            yield from engine.log_file_chunks(iter(stream))
        except engine.EngineError as exc:
            yield f"\n-- the download broke off: {exc}\n".encode()
        finally:
            stream.close()

    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(lines(), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{sandbox.name}-output-{stamp}.log"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
