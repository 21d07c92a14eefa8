"""A sandbox's agent activity through the API: the page's "Agent activity" card (what Claude Code
in it did: tool calls, permission decisions, API requests with tokens and cost), read with the
card's selector (agents.selectors.agent_events) and filters. Whoever sees the sandbox reads it."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from agents import selectors
from agents.models import EVENT_FIELDS, AgentEvent

from .helpers import page_of
from .serializers import StrictSerializer
from .views import BAD, ERRORS, NOT_FOUND, PK, PanelAPIView, _validated


class AgentActivityFilter(StrictSerializer):
    kind = serializers.ChoiceField(required=False, choices=AgentEvent.Kind.values, help_text="Only events of this kind.")
    tool = serializers.CharField(required=False, allow_blank=True, max_length=100, help_text="Only this tool's (Bash, Edit, ...).")
    q = serializers.CharField(required=False, allow_blank=True, max_length=200, help_text="Part of a command, path, model or event name.")
    page = serializers.IntegerField(required=False, min_value=1, max_value=100_000)


class AgentEventSerializer(serializers.ModelSerializer):
    cost_usd = serializers.DecimalField(max_digits=14, decimal_places=6, coerce_to_string=True)

    class Meta:
        model = AgentEvent
        fields = EVENT_FIELDS
        read_only_fields = fields


class AgentActivityPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = AgentEventSerializer(many=True)


class SandboxAgentActivity(PanelAPIView):
    @extend_schema(
        operation_id="sandboxes_agent_activity",
        parameters=[PK, AgentActivityFilter],
        responses={200: AgentActivityPageSerializer, **BAD, **ERRORS, **NOT_FOUND},
        summary="What the agent in the sandbox did, newest first (the page's Agent activity card)",
    )
    def get(self, request: Request, pk: str) -> Response:
        sandbox = self.sandbox_or_404(request, pk)
        query = _validated(AgentActivityFilter, request.query_params.dict()).validated_data
        rows = selectors.agent_events(
            sandbox=sandbox, kind=query.get("kind", ""), tool=query.get("tool", "").strip(), search=query.get("q", "").strip()
        )
        return Response(page_of(request, rows, query.get("page", 1), lambda found: AgentEventSerializer(found, many=True).data))
