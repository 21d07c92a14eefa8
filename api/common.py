"""What the API's views share beyond PanelAPIView (api.views): ids from the path, the services'
errors as answers, and the schema's common answers."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import exceptions

from sandboxes.services.errors import InvalidInput

from . import serializers as s


def pk_or_404(pk: int | str, what: str) -> int:
    """A path's id as a number; anything else is 404, as for an id that does not exist."""
    if isinstance(pk, int):
        return pk
    if not (pk.isascii() and pk.isdigit() and len(pk) < 19):
        raise exceptions.NotFound(f"No such {what}.")
    return int(pk)


def invalid(exc: InvalidInput) -> exceptions.ValidationError:
    """A service's InvalidInput as DRF's 400: each field with its messages."""
    return exceptions.ValidationError({field or "non_field_errors": problems for field, problems in exc.errors.items()})


def field_errors(errors: dict[str, list[str]]) -> exceptions.ValidationError:
    """A service's {field ("" for the whole form): messages} as DRF's 400."""
    return exceptions.ValidationError({field or "non_field_errors": problems for field, problems in errors.items()})


def not_found(text: str) -> dict:
    return {404: OpenApiResponse(s.ErrorSerializer, description=text)}


def conflict(text: str) -> dict:
    return {409: OpenApiResponse(s.ErrorSerializer, description=text)}


BAD = {400: OpenApiResponse(OpenApiTypes.OBJECT, description="What was sent is refused: each field with its messages.")}


def path_id(name: str, what: str) -> OpenApiParameter:
    return OpenApiParameter(name, int, OpenApiParameter.PATH, description=f"The {what}'s id.")
