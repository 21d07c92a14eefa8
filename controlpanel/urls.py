from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from backups import urls as backup_urls
from incidents import urls as incident_urls
from storage import urls as storage_urls
from teams import views_second_factor

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("2fa/setup/", views_second_factor.setup, name="second_factor_setup"),
    path("2fa/verify/", views_second_factor.verify, name="second_factor_verify"),
    path("2fa/remove/", views_second_factor.remove, name="second_factor_remove"),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("account/api-tokens/", include("api.token_urls")),
    path("audit/", include("audit.urls")),
    path("backups/", include("backups.urls")),
    path("incidents/", include("incidents.urls")),
    path("", include("agents.urls")),
    path("teams/<slug:slug>/webhooks/", include("webhooks.urls")),
    path("teams/", include("teams.urls")),
    path("hosts/", include("hosts.urls")),
    path("sandboxes/<int:pk>/", include(backup_urls.sandbox_urlpatterns)),
    path("sandboxes/<int:pk>/", include(incident_urls.sandbox_urlpatterns)),
    path("sandboxes/<int:pk>/", include(storage_urls.sandbox_urlpatterns)),
    path("", include("sandboxes.urls")),
]
