"""The API's one parser: JSON, bounded in size and depth, so that no body makes a 500."""

import json

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import JSONParser

MAX_DEPTH = 20


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


def _depth(value, limit: int) -> int:
    """How deep `value` nests, counted only up to `limit` + 1 (iteratively: no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


class BoundedJSONParser(JSONParser):
    """JSON of at most API_MAX_BODY_BYTES and MAX_DEPTH levels; anything else is a clear 4xx."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        limit = settings.API_MAX_BODY_BYTES
        try:
            if length and int(length) > limit:
                raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        except ValueError:
            raise exceptions.ParseError("Content-Length is not a number.") from None
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            data = json.loads(body.decode(settings.DEFAULT_CHARSET or "utf-8"))
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested past Python's stack
            raise exceptions.ParseError(f"The body is not valid JSON: {exc.__class__.__name__}.") from None
        if _depth(data, MAX_DEPTH) > MAX_DEPTH:
            raise exceptions.ParseError(f"The body nests deeper than {MAX_DEPTH} levels.")
        return data
