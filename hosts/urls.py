from django.urls import path

from . import views

urlpatterns = [
    path("", views.host_list, name="host_list"),
    path("new/", views.host_add, name="host_add"),
    path("<int:pk>/state/", views.host_state, name="host_state"),
    path("<int:pk>/delete/", views.host_delete, name="host_delete"),
    path("tokens/new/", views.token_add, name="host_token_add"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="host_token_revoke"),
]
