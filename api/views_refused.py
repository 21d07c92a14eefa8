"""A sandbox's refused connections through the API: the network card's decision log (what its
egress rules refused), each attempt or one row per destination, read with the page's selector
(sandboxes.selectors.egress_denials) and filters. Whoever sees the sandbox reads it."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from sandboxes import selectors
from sandboxes.models import EgressDenial

from .helpers import page_of
from .serializers import StrictSerializer
from .views import BAD, ERRORS, NOT_FOUND, PK, PanelAPIView, _validated

PROTOCOLS = ["tcp", "udp", "icmp", "dns"]


class RefusedFilter(StrictSerializer):
    q = serializers.CharField(
        required=False, allow_blank=True, max_length=253, help_text="The start of an address, part of a name, or a port."
    )
    protocol = serializers.ChoiceField(required=False, choices=PROTOCOLS, help_text="dns: refused names.")
    since = serializers.ChoiceField(required=False, choices=list(selectors.DENIAL_WINDOWS), help_text="Only this recent; all kept if none.")
    page = serializers.IntegerField(required=False, min_value=1, max_value=100_000)


class RefusedSerializer(serializers.ModelSerializer):
    class Meta:
        model = EgressDenial
        fields = ["at", "destination", "name", "port", "protocol", "count"]
        read_only_fields = fields


class RefusedPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = RefusedSerializer(many=True)


class RefusedGroupSerializer(serializers.Serializer):
    destination = serializers.IPAddressField(allow_null=True)
    name = serializers.CharField(allow_blank=True)
    attempts = serializers.IntegerField()
    entries = serializers.IntegerField()
    ports = serializers.IntegerField(help_text="How many distinct ports.")
    low_port = serializers.IntegerField(allow_null=True)
    high_port = serializers.IntegerField(allow_null=True)
    first = serializers.DateTimeField()
    last = serializers.DateTimeField()


class RefusedGroupPageSerializer(RefusedPageSerializer):
    results = RefusedGroupSerializer(many=True)  # type: ignore[assignment]


def _query(request: Request) -> dict:
    return _validated(RefusedFilter, request.query_params.dict()).validated_data  # type: ignore[return-value]


def _rows(sandbox, query: dict, grouped: bool):
    return selectors.egress_denials(
        sandbox=sandbox,
        search=query.get("q", "").strip(),
        protocol=query.get("protocol", ""),
        since=query.get("since", ""),
        grouped=grouped,
    )


class SandboxRefused(PanelAPIView):
    @extend_schema(
        operation_id="sandboxes_refused",
        parameters=[PK, RefusedFilter],
        responses={200: RefusedPageSerializer, **BAD, **ERRORS, **NOT_FOUND},
        summary="What the sandbox's egress rules refused, each attempt, newest first (the network card's log)",
    )
    def get(self, request: Request, pk: str) -> Response:
        sandbox = self.sandbox_or_404(request, pk)
        query = _query(request)
        rows = _rows(sandbox, query, grouped=False)
        return Response(page_of(request, rows, query.get("page", 1), lambda found: RefusedSerializer(found, many=True).data))


class SandboxRefusedGrouped(PanelAPIView):
    @extend_schema(
        operation_id="sandboxes_refused_grouped",
        parameters=[PK, RefusedFilter],
        responses={200: RefusedGroupPageSerializer, **BAD, **ERRORS, **NOT_FOUND},
        summary="What the sandbox's egress rules refused, one row per destination, the latest first",
    )
    def get(self, request: Request, pk: str) -> Response:
        sandbox = self.sandbox_or_404(request, pk)
        query = _query(request)
        rows = _rows(sandbox, query, grouped=True)
        return Response(page_of(request, rows, query.get("page", 1), lambda found: RefusedGroupSerializer(found, many=True).data))
