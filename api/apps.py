from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "REST API"

    def ready(self) -> None:
        from . import auth  # noqa: F401  (registers the token's security scheme with drf-spectacular)
