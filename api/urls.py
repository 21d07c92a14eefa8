"""/api/: the versioned endpoints, the schema and its documentation page."""

from django.contrib.auth.decorators import login_not_required, login_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import views, views_webhooks

urlpatterns = [
    # The API's own views answer an anonymous request with 401 themselves (tokens only): the
    # pages' sign-in redirect must not stand in front of them (DRF marks its views so too; said
    # here where the URLs are read).
    path("v1/sandboxes/", login_not_required(views.SandboxList.as_view()), name="api_sandboxes"),
    path("v1/sandboxes/<str:pk>/", login_not_required(views.SandboxDetail.as_view()), name="api_sandbox"),
    path("v1/sandboxes/<str:pk>/<str:action>/", login_not_required(views.SandboxAction.as_view()), name="api_sandbox_action"),
    # The schema answers a signed-in browser (the docs page fetches it) or a token.
    path("schema/", login_not_required(SpectacularAPIView.as_view()), name="api_schema"),
    # The documentation page is a page: signed in (DRF's views skip LoginRequiredMiddleware, hence
    # login_required), second factor and all. Its assets are vendored (drf-spectacular-sidecar),
    # never loaded from the internet.
    path("docs/", login_required(SpectacularSwaggerView.as_view(url_name="api_schema")), name="api_docs"),
    # Webhooks (api.views_webhooks): a team admin's, as on the team's webhooks page.
    path("v1/webhooks/", login_not_required(views_webhooks.WebhookList.as_view()), name="api_webhooks"),
    path("v1/webhooks/<str:pk>/", login_not_required(views_webhooks.WebhookDetail.as_view()), name="api_webhook"),
    path("v1/webhooks/<str:pk>/rotate-secret/", login_not_required(views_webhooks.WebhookRotate.as_view()), name="api_webhook_rotate"),
    path(
        "v1/webhooks/<str:pk>/deliveries/<str:delivery>/redeliver/",
        login_not_required(views_webhooks.WebhookRedeliver.as_view()),
        name="api_webhook_redeliver",
    ),
]

# A sandbox's output (api/views_logs.py). Put first: the actions' pattern above would take "logs"
# as an <action> (and answer a GET with 405).
from . import views_logs  # noqa: E402

urlpatterns.insert(0, path("v1/sandboxes/<str:pk>/logs/", login_not_required(views_logs.SandboxLogs.as_view()), name="api_sandbox_logs"))
