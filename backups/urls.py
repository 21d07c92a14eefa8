from django.urls import path

from . import views

urlpatterns = [
    path("", views.backup_list, name="backup_list"),
    path("import/", views.backup_import, name="backup_import"),
    path("<int:pk>/", views.backup_detail, name="backup_detail"),
    path("<int:pk>/download/", views.backup_download, name="backup_download"),
    path("<int:pk>/verify/", views.backup_verify, name="backup_verify"),
    path("<int:pk>/delete/", views.backup_delete, name="backup_delete"),
    path("<int:pk>/cancel/", views.backup_cancel, name="backup_cancel"),
    path("<int:pk>/restore/", views.backup_restore, name="backup_restore"),
]

# Under /sandboxes/<pk>/ (the sandbox page's Backups card).
sandbox_urlpatterns = [
    path("backups/", views.sandbox_backups, name="sandbox_backups"),
    path("backups/new/", views.sandbox_backup_now, name="sandbox_backup_now"),
    path("backups/schedule/", views.sandbox_backup_schedule, name="sandbox_backup_schedule"),
]
