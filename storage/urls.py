from django.urls import path

from . import views

# Under /sandboxes/<pk>/ (the sandbox page's Storage card).
sandbox_urlpatterns = [
    path("storage/", views.sandbox_storage, name="sandbox_storage"),
    path("storage/quota/", views.disk_quota, name="sandbox_disk_quota"),
    path("checkpoints/new/", views.checkpoint_create, name="checkpoint_create"),
    path("checkpoints/retention/", views.checkpoint_retention, name="checkpoint_retention"),
    path("checkpoints/<int:checkpoint_pk>/rollback/", views.checkpoint_rollback, name="checkpoint_rollback"),
    path("checkpoints/<int:checkpoint_pk>/delete/", views.checkpoint_delete, name="checkpoint_delete"),
]
