"""The security checklist's pages: a team's manual items, and a sandbox's live checklist card."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from controlpanel.http import client_ip
from teams.models import Team
from teams.permissions import Role, role_allows, user_role

from .. import selectors
from ..services import InvalidInput


@require_http_methods(["GET", "POST"])
def team_checklist(request: HttpRequest, slug: str) -> HttpResponse:
    """The team's manual checklist items: every member sees them, team admins add, change and
    remove them (each audited)."""
    from ..models import ChecklistItem
    from ..services import checklist as manual

    team = Team.objects.filter(slug=slug).first()
    role = user_role(user=request.user, team=team) if team else None
    if team is None or role is None:
        raise Http404("No such team.")
    items = manual.team_items(team)
    if request.method == "POST":
        if not role_allows(role, Role.ADMIN):
            raise PermissionDenied("Team admins change the team's checklist.")
        item = None
        if request.POST.get("item"):
            item = ChecklistItem.objects.filter(team=team, pk=request.POST["item"]).first() if request.POST["item"].isdigit() else None
            if item is None:
                raise Http404("No such item.")
        try:
            if item is not None and request.POST.get("remove"):
                manual.item_delete(actor=request.user, team=team, item=item, source_ip=client_ip(request))
                messages.info(request, "Item removed.")
            else:
                manual.item_save(
                    actor=request.user,
                    team=team,
                    phase=request.POST.get("phase", ""),
                    text=request.POST.get("text", ""),
                    item=item,
                    source_ip=client_ip(request),
                )
                messages.info(request, "Item saved.")
        except InvalidInput as exc:
            messages.error(request, str(exc))  # InvalidInput's text: its problems, joined
        return redirect("team_checklist", slug=slug)
    context = {"team": team, "items": items, "phases": ChecklistItem.Phase.choices, "can_change": role_allows(role, Role.ADMIN)}
    return render(request, "credentials/team_checklist.html", context)


@require_http_methods(["GET", "POST"])
def sandbox_checklist(request: HttpRequest, pk: int) -> HttpResponse:
    """The live security checklist card (loaded by the sandbox's page after it is shown: the
    checks read the disk and Docker). A POST ticks or unticks a manual item."""
    from .. import checklist
    from ..models import ChecklistItem
    from ..services import checklist as manual

    sandbox = selectors.visible_sandbox_or_404(user=request.user, pk=pk)
    role = user_role(user=request.user, team=sandbox.team)
    items = manual.team_items(sandbox.team)
    if request.method == "POST":
        if not role_allows(role, Role.OPERATOR):
            raise PermissionDenied("Operators tick a sandbox's checklist.")
        raw = request.POST.get("item", "")
        item = ChecklistItem.objects.filter(pk=int(raw), team=sandbox.team).first() if raw.isdecimal() and len(raw) < 12 else None
        if item is None:
            raise Http404("No such item.")
        manual.tick(actor=request.user, sandbox=sandbox, item=item, ticked=request.POST.get("ticked") == "1", source_ip=client_ip(request))
    ticked = set(sandbox.checklist_ticks.values_list("item_id", flat=True))
    phases = [(label, [(item, item.pk in ticked) for item in items if item.phase == value]) for value, label in ChecklistItem.Phase.choices]
    context = {
        "sandbox": sandbox,
        "checks": checklist.run_checks(sandbox),
        "phases": phases,
        "can_tick": role_allows(role, Role.OPERATOR),
    }
    return render(request, "sandboxes/_checklist.html", context)
