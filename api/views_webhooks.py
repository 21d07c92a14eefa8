"""The API's webhook endpoints: what the team's webhooks page does, through the same services
(webhooks.services authorizes the team admin role, under the token's scope, and audits).

    /api/v1/webhooks/                                     GET the webhooks of teams you administer; POST one
    /api/v1/webhooks/{pk}/                                GET it with its newest deliveries; PATCH enabled,
                                                          allow_private; DELETE it
    /api/v1/webhooks/{pk}/rotate-secret/                  POST: a new secret, shown this once
    /api/v1/webhooks/{pk}/deliveries/{delivery}/redeliver/ POST: send a delivery's event again

A webhook of a team you are not in is 404, as one that does not exist; one of a team where your
role (capped by the token's scope) is not admin is 403, as the page answers.
"""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlpanel.http import client_ip
from sandboxes.secrets import vault
from sandboxes.services import InvalidInput
from teams.permissions import Role, capped, request_roles, teams_visible
from webhooks import events, selectors, services
from webhooks.models import Delivery, Webhook

from . import serializers as s
from .views import BAD, BODY, ERRORS, PanelAPIView, _validated

NOT_FOUND = {404: OpenApiResponse(s.ErrorSerializer, description="No such webhook, or not one of your teams'.")}
PK = OpenApiParameter("pk", int, OpenApiParameter.PATH, description="The webhook's id.")
BIG = 2**62


class DeliverySerializer(serializers.ModelSerializer):
    # Said in words, not as an enum: a second enum of a field named "status" would rename the
    # sandboxes' own in the schema.
    status = serializers.CharField(help_text="pending, sending, delivered, failed or refused.")

    class Meta:
        model = Delivery
        fields = [
            "id",
            "event",
            "event_id",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "next_attempt_at",
            "created_at",
            "delivered_at",
        ]
        read_only_fields = fields


class WebhookSerializer(serializers.ModelSerializer):
    events = serializers.ListField(child=serializers.ChoiceField(choices=sorted(events.EVENT_NAMES)))

    class Meta:
        model = Webhook
        fields = ["id", "team", "url", "events", "enabled", "allow_private", "created_by_name", "created_at", "secret_rotated_at"]
        read_only_fields = fields


class WebhookDetailSerializer(WebhookSerializer):
    deliveries = DeliverySerializer(many=True, help_text="The newest deliveries, newest first.")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "deliveries"]
        read_only_fields = fields


class WebhookSecretSerializer(serializers.Serializer):
    webhook = WebhookSerializer()
    secret = serializers.CharField(help_text="Shown this once: the panel keeps it sealed and never shows it again.")


class WebhookCreateSerializer(s.StrictSerializer):
    team = serializers.IntegerField(min_value=1, max_value=BIG)
    url = serializers.CharField(max_length=500)
    events = serializers.ListField(child=serializers.ChoiceField(choices=sorted(events.EVENT_NAMES)), min_length=1, max_length=20)
    allow_private = serializers.BooleanField(default=False, help_text="Let it reach a private address (superusers only: 403 for others).")


class WebhookChangeSerializer(s.StrictSerializer):
    enabled = serializers.BooleanField(required=False)
    allow_private = serializers.BooleanField(
        required=False, help_text="true: superusers only (403 for others); false: any of the team's admins."
    )


def _invalid(exc: InvalidInput) -> exceptions.ValidationError:
    return exceptions.ValidationError({field or "non_field_errors": problems for field, problems in exc.errors.items()})


class WebhookAPIView(PanelAPIView):
    def webhook_or_404(self, request: Request, pk: int | str) -> Webhook:
        """The webhook, for an admin of its team (under the token's scope): 404 when the user is
        not in its team (or no such id), 403 when their role there is not admin."""
        if isinstance(pk, str) and not (pk.isascii() and pk.isdigit() and len(pk) < 19):
            raise exceptions.NotFound("No such webhook.")
        webhook = Webhook.objects.filter(pk=int(pk)).select_related("team").first()
        role = request_roles(request).get(webhook.team_id) if webhook else None
        if webhook is None or role is None:
            raise exceptions.NotFound("No such webhook.")
        if capped(role) != Role.ADMIN:
            raise exceptions.PermissionDenied("Only the team's admins manage its webhooks.")
        return webhook


class WebhookList(WebhookAPIView):
    @extend_schema(
        operation_id="webhooks_list",
        responses={200: WebhookSerializer(many=True), **ERRORS},
        summary="The webhooks of the teams you administer",
    )
    def get(self, request: Request) -> Response:
        roles = request_roles(request)
        teams = [team_id for team_id, role in roles.items() if capped(role) == Role.ADMIN]
        hooks = Webhook.objects.filter(team_id__in=teams).order_by("team_id", "id")
        return Response(WebhookSerializer(hooks, many=True).data)

    @extend_schema(
        operation_id="webhooks_create",
        request=WebhookCreateSerializer,
        responses={201: WebhookSecretSerializer, **BAD, **ERRORS, **BODY},
        summary="Register a webhook (team admins); its secret is in this answer only",
    )
    def post(self, request: Request) -> Response:
        data = _validated(WebhookCreateSerializer, request.data).validated_data
        team = teams_visible(user=request.user).filter(pk=data["team"]).first()
        if team is None:
            raise exceptions.ValidationError({"team": ["No such team."]})
        try:
            new = services.webhook_create(
                actor=request.user,
                team=team,
                url=data["url"],
                chosen_events=data["events"],
                allow_private=data["allow_private"],
                source_ip=client_ip(request),
            )
        except InvalidInput as exc:
            raise _invalid(exc) from exc
        except vault.VaultError as exc:
            return Response({"detail": str(exc)}, status=503)
        body = {"webhook": WebhookSerializer(new.webhook).data, "secret": new.secret}
        url = f"/api/v1/webhooks/{new.webhook.pk}/"
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": url, "Cache-Control": "no-store"})


class WebhookDetail(WebhookAPIView):
    def _detail(self, webhook: Webhook) -> dict:
        newest = Delivery.objects.filter(webhook=webhook).order_by("-id")[: selectors.SHOWN_DELIVERIES]
        return {**WebhookSerializer(webhook).data, "deliveries": DeliverySerializer(newest, many=True).data}

    @extend_schema(
        operation_id="webhooks_retrieve",
        parameters=[PK],
        responses={200: WebhookDetailSerializer, **ERRORS, **NOT_FOUND},
        summary="One webhook, with its newest deliveries",
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(self._detail(self.webhook_or_404(request, pk)))

    @extend_schema(
        operation_id="webhooks_partial_update",
        parameters=[PK],
        request=WebhookChangeSerializer,
        responses={200: WebhookDetailSerializer, **BAD, **ERRORS, **BODY, **NOT_FOUND},
        summary="Enable or disable it; allow or refuse private addresses",
    )
    def patch(self, request: Request, pk: str) -> Response:
        webhook = self.webhook_or_404(request, pk)
        data = _validated(WebhookChangeSerializer, request.data).validated_data
        ip = client_ip(request)
        if "allow_private" in data:  # first: refused (superusers only), nothing else has changed
            services.webhook_set_allow_private(actor=request.user, webhook=webhook, allow=data["allow_private"], source_ip=ip)
        if "enabled" in data:
            services.webhook_set_enabled(actor=request.user, webhook=webhook, enabled=data["enabled"], source_ip=ip)
        webhook.refresh_from_db()
        return Response(self._detail(webhook))

    @extend_schema(
        operation_id="webhooks_destroy",
        parameters=[PK],
        request=None,
        responses={204: OpenApiResponse(description="Deleted, with its deliveries."), **ERRORS, **NOT_FOUND},
        summary="Delete a webhook",
    )
    def delete(self, request: Request, pk: str) -> Response:
        services.webhook_delete(actor=request.user, webhook=self.webhook_or_404(request, pk), source_ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotate(WebhookAPIView):
    @extend_schema(
        operation_id="webhooks_rotate_secret",
        parameters=[PK],
        request=None,
        responses={200: WebhookSecretSerializer, **ERRORS, **NOT_FOUND},
        summary="A new secret for the webhook, in this answer only",
    )
    def post(self, request: Request, pk: str) -> Response:
        webhook = self.webhook_or_404(request, pk)
        try:
            new = services.webhook_rotate_secret(actor=request.user, webhook=webhook, source_ip=client_ip(request))
        except vault.VaultError as exc:
            return Response({"detail": str(exc)}, status=503)
        return Response({"webhook": WebhookSerializer(new.webhook).data, "secret": new.secret}, headers={"Cache-Control": "no-store"})


class WebhookRedeliver(WebhookAPIView):
    @extend_schema(
        operation_id="webhooks_redeliver",
        parameters=[PK, OpenApiParameter("delivery", int, OpenApiParameter.PATH, description="The delivery's id.")],
        request=None,
        responses={
            202: OpenApiResponse(DeliverySerializer, description="A new delivery of the same event, queued."),
            409: OpenApiResponse(s.ErrorSerializer, description="The webhook is disabled, or too many of its deliveries still wait."),
            **ERRORS,
            **NOT_FOUND,
        },
        summary="Send a delivery's event again",
    )
    def post(self, request: Request, pk: str, delivery: str) -> Response:
        webhook = self.webhook_or_404(request, pk)
        found = None
        if delivery.isascii() and delivery.isdigit() and len(delivery) < 19:
            found = Delivery.objects.filter(pk=int(delivery), webhook=webhook).select_related("webhook__team").first()
        if found is None:
            raise exceptions.NotFound("No such delivery of this webhook.")
        try:
            again = services.delivery_redeliver(actor=request.user, delivery=found, source_ip=client_ip(request))
        except InvalidInput as exc:
            return Response({"detail": str(exc)}, status=409)
        return Response(DeliverySerializer(again).data, status=status.HTTP_202_ACCEPTED)
