from django.apps import AppConfig
from django.core import checks


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "REST API"

    def ready(self) -> None:
        from . import auth  # noqa: F401  (registers the token's security scheme with drf-spectacular)

        checks.register(rate_limit_check)


def rate_limit_check(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """A mistyped API_RATE_LIMIT is said at start (`manage.py check`), not at the first call."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from .throttling import parse_rate

    try:
        parse_rate(settings.API_RATE_LIMIT)
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="api.E001")]
    return []
