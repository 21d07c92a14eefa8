from django.contrib import admin

from .models import Sandbox


@admin.register(Sandbox)
class SandboxAdmin(admin.ModelAdmin):
    """Read-only here: sandboxes change only through the panel's services, and Destroy is the
    only way a sandbox goes (it removes its container, volume and folder, and keeps the row)."""

    list_display = ["name", "team", "status", "image", "memory_mb", "cpus", "network_mode"]
    list_filter = ["status", "team"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
