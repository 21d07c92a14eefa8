"""The security checklist through the API, thin over the pages' services (sandboxes.services.
checklist, sandboxes.checklist): a team's manual items (every member reads them, its admins add,
change and remove them) and a sandbox's checklist (its automatic checks, run now, and its manual
items with their ticks; operators tick). Each write is authorized and audited by the service."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlpanel.http import client_ip
from sandboxes import checklist
from sandboxes.models import ChecklistItem
from sandboxes.services import InvalidInput
from sandboxes.services import checklist as manual
from teams.models import Team
from teams.permissions import Role, authorize

from .common import BAD, invalid, not_found, path_id, pk_or_404
from .serializers import StrictSerializer
from .views import BODY, ERRORS, NOT_FOUND, PK, PanelAPIView, _validated
from .views_teams import TEAM_404, TeamsMixin

ITEM = OpenApiParameter("item", int, OpenApiParameter.PATH, description="The checklist item's id.")
ITEM_404 = not_found("No such team or item (or not yours).")


class ItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    phase = serializers.ChoiceField(choices=ChecklistItem.Phase.choices)
    text = serializers.CharField()


class ItemSetSerializer(StrictSerializer):
    phase = serializers.ChoiceField(choices=ChecklistItem.Phase.choices)
    text = serializers.CharField(max_length=1000, help_text="1 to 200 characters (spaces folded).")


class TickedItemSerializer(ItemSerializer):
    ticked = serializers.BooleanField()


class CheckSerializer(serializers.Serializer):
    label = serializers.CharField()
    ok = serializers.BooleanField(allow_null=True, help_text="null: does not apply (yet).")
    detail = serializers.CharField(allow_blank=True)


class SandboxChecklistSerializer(serializers.Serializer):
    checks = CheckSerializer(many=True, help_text="The automatic checks, run now (the sandbox page's card).")
    failed = serializers.IntegerField(help_text="How many automatic checks failed (the dashboard's badge).")
    items = TickedItemSerializer(many=True, help_text="The team's manual items, and whether this sandbox has each ticked.")


class TickSerializer(StrictSerializer):
    ticked = serializers.BooleanField()


def _item(item: ChecklistItem) -> dict:
    return {"id": item.pk, "phase": item.phase, "text": item.text}


class TeamChecklist(TeamsMixin):
    @extend_schema(
        operation_id="teams_checklist_list",
        parameters=[path_id("pk", "team")],
        responses={200: ItemSerializer(many=True), **ERRORS, **TEAM_404},
        summary="The team's manual checklist items (the original list until its admins change it)",
    )
    def get(self, request: Request, pk: str) -> Response:
        team, _role = self.team_or_404(request, pk)
        return Response([_item(item) for item in manual.team_items(team)])

    @extend_schema(
        operation_id="teams_checklist_add",
        parameters=[path_id("pk", "team")],
        request=ItemSetSerializer,
        responses={201: ItemSerializer, **BAD, **ERRORS, **BODY, **TEAM_404},
        summary="Add a manual item (team admins)",
    )
    def post(self, request: Request, pk: str) -> Response:
        team, _role = self.team_or_404(request, pk)
        data = _validated(ItemSetSerializer, request.data).validated_data
        try:
            made = manual.item_save(actor=request.user, team=team, phase=data["phase"], text=data["text"], source_ip=client_ip(request))
        except InvalidInput as exc:
            raise invalid(exc) from exc
        return Response(_item(made), status=status.HTTP_201_CREATED)


class TeamChecklistItem(TeamsMixin):
    def _item(self, request: Request, pk: str, item: str) -> tuple[Team, ChecklistItem]:
        team, _role = self.team_or_404(request, pk)
        authorize(request.user, team, Role.ADMIN)  # before the look-up, as the page
        found = ChecklistItem.objects.filter(team=team, pk=pk_or_404(item, "item")).first()
        if found is None:
            raise exceptions.NotFound("No such item.")
        return team, found

    @extend_schema(
        operation_id="teams_checklist_change",
        parameters=[path_id("pk", "team"), ITEM],
        request=ItemSetSerializer,
        responses={200: ItemSerializer, **BAD, **ERRORS, **BODY, **ITEM_404},
        summary="Change a manual item (team admins); its ticks stay",
    )
    def put(self, request: Request, pk: str, item: str) -> Response:
        team, found = self._item(request, pk, item)
        data = _validated(ItemSetSerializer, request.data).validated_data
        try:
            saved = manual.item_save(
                actor=request.user, team=team, phase=data["phase"], text=data["text"], item=found, source_ip=client_ip(request)
            )
        except InvalidInput as exc:
            raise invalid(exc) from exc
        return Response(_item(saved))

    @extend_schema(
        operation_id="teams_checklist_remove",
        parameters=[path_id("pk", "team"), ITEM],
        responses={204: None, **ERRORS, **ITEM_404},
        summary="Remove a manual item and its ticks (team admins)",
    )
    def delete(self, request: Request, pk: str, item: str) -> Response:
        team, found = self._item(request, pk, item)
        manual.item_delete(actor=request.user, team=team, item=found, source_ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _sandbox_checklist(sandbox) -> dict:
    checks = checklist.run_checks(sandbox)
    ticked = set(sandbox.checklist_ticks.values_list("item_id", flat=True))
    items = [{**_item(item), "ticked": item.pk in ticked} for item in manual.team_items(sandbox.team)]
    return SandboxChecklistSerializer(
        {"checks": [{"label": c.label, "ok": c.ok, "detail": c.detail} for c in checks], "failed": sandbox.checklist_failed, "items": items}
    ).data  # type: ignore[return-value]


class SandboxChecklist(PanelAPIView):
    @extend_schema(
        operation_id="sandboxes_checklist",
        parameters=[PK],
        responses={200: SandboxChecklistSerializer, **ERRORS, **NOT_FOUND},
        summary="The sandbox's security checklist: its automatic checks (run now) and its manual items' ticks",
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(_sandbox_checklist(self.sandbox_or_404(request, pk)))


class SandboxChecklistTick(PanelAPIView):
    @extend_schema(
        operation_id="sandboxes_checklist_tick",
        parameters=[PK, ITEM],
        request=TickSerializer,
        responses={200: TickedItemSerializer, **BAD, **ERRORS, **BODY, **not_found("No such sandbox or item (or not yours).")},
        summary="Tick or untick a manual item for the sandbox (operators)",
    )
    def put(self, request: Request, pk: str, item: str) -> Response:
        sandbox = self.sandbox_or_404(request, pk)
        authorize(request.user, sandbox.team, Role.OPERATOR)  # before the look-up, as the page
        found = ChecklistItem.objects.filter(team=sandbox.team, pk=pk_or_404(item, "item")).first()
        if found is None:
            raise exceptions.NotFound("No such item.")
        ticked = _validated(TickSerializer, request.data).validated_data["ticked"]
        manual.tick(actor=request.user, sandbox=sandbox, item=found, ticked=ticked, source_ip=client_ip(request))
        return Response({**_item(found), "ticked": ticked})
