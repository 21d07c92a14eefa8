from django.urls import path

from . import views

# Under teams/<slug>/webhooks/ (controlpanel.urls).
urlpatterns = [
    path("", views.team_webhooks, name="team_webhooks"),
    path("<int:pk>/", views.webhook_change, name="webhook_change"),
    path("<int:pk>/deliveries/<int:delivery_pk>/redeliver/", views.delivery_redeliver, name="webhook_redeliver"),
]
