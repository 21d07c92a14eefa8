from django.urls import path

from . import views

urlpatterns = [
    path("sandboxes/<int:pk>/agent/", views.sandbox_agent_activity, name="sandbox_agent_activity"),
    path("sandboxes/<int:pk>/agent/usage/", views.sandbox_agent_usage, name="sandbox_agent_usage"),
    path("teams/<slug:slug>/agent-usage/", views.team_agent_usage, name="team_agent_usage"),
]
