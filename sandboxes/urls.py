from django.urls import path

from . import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("sandboxes/new/", views.sandbox_create, name="sandbox_create"),
    path("sandboxes/<int:pk>/", views.sandbox_detail, name="sandbox_detail"),
    path("sandboxes/<int:pk>/<str:action>/", views.sandbox_action, name="sandbox_action"),
]
