"""GET /api/v1/sandboxes/<id>/decisions.jsonl: the sandbox's decision stream (sandboxes.decisions)
as JSON Lines, read (bounded, filtered, resumable with `after`) or followed (follow=1: the live
tail, capped per user as followed logs are, api.follows). Whoever sees the sandbox reads it;
a sandbox of another team is a 404."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from sandboxes import decisions

from . import follows
from . import serializers as s
from .models import ApiToken
from .views import BAD, ERRORS, NOT_FOUND, PK, PanelAPIView, _validated
from .views_audit import ByAcceptOnly, NDJSONRenderer
from .views_logs import _still_allowed


class DecisionQuery(s.StrictSerializer):
    kind = serializers.ChoiceField(required=False, choices=decisions.KINDS, help_text="Only this layer's decisions.")
    allowed = serializers.BooleanField(required=False, allow_null=True, default=None, help_text="Only allowed (true) or refused (false).")
    since = serializers.DateTimeField(required=False, help_text="Only decisions at or after this time (RFC 3339).")
    until = serializers.DateTimeField(required=False, help_text="Only decisions before this time (RFC 3339).")
    after = serializers.IntegerField(required=False, min_value=0, max_value=2**63 - 1, help_text="Only rows after this id (resume).")
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=decisions.MAX_ROWS,
        help_text=f"At most this many lines ({decisions.DEFAULT_ROWS} unless asked).",
    )
    follow = serializers.BooleanField(
        required=False,
        default=False,
        help_text=f"After the rows there are, go on sending new ones as they are written, for {decisions.FOLLOW_SECONDS} s "
        "at most (then ask again with `after`).",
    )


class SandboxDecisions(PanelAPIView):
    content_negotiation_class = ByAcceptOnly

    def get_renderers(self):
        from rest_framework import renderers

        return [renderers.JSONRenderer(), NDJSONRenderer()]

    @extend_schema(
        operation_id="sandboxes_decisions",
        parameters=[PK, DecisionQuery],
        responses={
            (200, decisions.NDJSON): OpenApiResponse(
                OpenApiTypes.STR, description="One JSON object a line, oldest first (the fields: the README's Decision stream)."
            ),
            429: OpenApiResponse(s.ErrorSerializer, description="follow=1 while the user (or the panel) follows as many as allowed."),
            **BAD,
            **ERRORS,
            **NOT_FOUND,
        },
        summary="The sandbox's allow/deny decisions as JSON Lines (connection, DNS, proxy, HTTP rule), read or followed",
    )
    def get(self, request: Request, pk: str):
        sandbox = self.sandbox_or_404(request, pk)
        query = dict(_validated(DecisionQuery, request.query_params.dict()).validated_data)
        try:
            slot = follows.follow_acquire(user_id=request.user.pk) if query["follow"] else None
        except follows.TooManyFollows as exc:
            return Response({"detail": str(exc)}, status=429, headers={"Retry-After": "30"})
        token = request.auth if isinstance(request.auth, ApiToken) else None

        def still_allowed() -> bool:  # as a followed log's: the user still sees it, the token still works
            return _still_allowed(user=request.user, token=token, sandbox_id=sandbox.pk)

        return decisions.response(
            request._request, sandbox, query, still_allowed=still_allowed, on_end=slot.release if slot is not None else lambda: None
        )
