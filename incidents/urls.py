from django.urls import path

from . import views

urlpatterns = [
    path("", views.incident_list, name="incident_list"),
    path("<int:pk>/", views.incident_detail, name="incident_detail"),
    path("<int:pk>/wizard/", views.incident_timeline, name="incident_timeline"),
    path("<int:pk>/step/", views.incident_step, name="incident_step"),
    path("<int:pk>/report.md", views.incident_report, {"fmt": "md"}, name="incident_report_md"),
    path("<int:pk>/report.html", views.incident_report, {"fmt": "html"}, name="incident_report_html"),
    path("<int:pk>/evidence/", views.incident_evidence, name="incident_evidence"),
    path("teams/<int:team_pk>/freeze/", views.team_freeze, name="team_freeze"),
]

# Under /sandboxes/<pk>/ (the sandbox page's "Declare an incident").
sandbox_urlpatterns = [
    path("incident/", views.incident_declare, name="incident_declare"),
]
