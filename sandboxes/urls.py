from django.urls import path, register_converter

from . import views
from .models import Sandbox
from .secrets import views as secrets_views


class ActionConverter:
    """Only the names of Sandbox.Action route to the action view; anything else is a 404."""

    regex = "|".join(Sandbox.Action.values)

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return str(value)


register_converter(ActionConverter, "action")

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("sandboxes/new/", views.sandbox_create, name="sandbox_create"),
    path("sandboxes/<int:pk>/", views.sandbox_detail, name="sandbox_detail"),
    path("sandboxes/<int:pk>/files/", views.sandbox_files, name="sandbox_files"),
    path("sandboxes/<int:pk>/logs/download/", views.sandbox_logs_download, name="sandbox_logs_download"),
    path("sandboxes/<int:pk>/transfer/", views.sandbox_transfer, name="sandbox_transfer"),
    path("sandboxes/<int:pk>/transfer/upload/", views.sandbox_upload, name="sandbox_upload"),
    path("sandboxes/<int:pk>/transfer/download/", views.sandbox_download, name="sandbox_download"),
    path("sandboxes/<int:pk>/secrets/", secrets_views.sandbox_secrets, name="sandbox_secrets"),
    path("sandboxes/<int:pk>/checklist/", views.sandbox_checklist, name="sandbox_checklist"),
    path("sandboxes/<int:pk>/refused/", views.sandbox_denials, name="sandbox_denials"),
    path("sandboxes/<int:pk>/decisions.jsonl", views.sandbox_decisions, name="sandbox_decisions"),
    path("sandboxes/<int:pk>/refused/allow/", views.sandbox_allow_refused, name="sandbox_allow_refused"),
    path("sandboxes/<int:pk>/network/", views.sandbox_network, name="sandbox_network"),
    path("sandboxes/<int:pk>/allowlist/", views.sandbox_allowlist, name="sandbox_allowlist"),
    path("sandboxes/<int:pk>/move/", views.sandbox_move, name="sandbox_move"),
    path("teams/<slug:slug>/secrets/", secrets_views.team_secrets, name="team_secrets"),
    path("teams/<slug:slug>/checklist/", views.team_checklist, name="team_checklist"),
    path("teams/<slug:slug>/allowlist/", views.team_allowlist, name="team_allowlist"),
    path("sandboxes/<int:pk>/<action:action>/", views.sandbox_action, name="sandbox_action"),
]
