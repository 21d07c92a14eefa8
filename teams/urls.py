from django.urls import path

from . import views

urlpatterns = [
    path("", views.team_list, name="team_list"),
    path("<slug:slug>/", views.team_detail, name="team_detail"),
    path("<slug:slug>/members/", views.team_member, name="team_member"),
    path("<slug:slug>/second-factor/", views.team_second_factor, name="team_second_factor"),
    path("<slug:slug>/policy/", views.team_policy, name="team_policy"),
    path("<slug:slug>/agent-policy/", views.team_agent_policy, name="team_agent_policy"),
]
