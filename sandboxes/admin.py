from django.contrib import admin

from audit.admin import ReadOnlyAdmin

from .models import ChecklistItem, Sandbox


@admin.register(Sandbox)
class SandboxAdmin(ReadOnlyAdmin):
    """Read-only here: sandboxes change only through the panel's services, and Destroy is the
    only way a sandbox goes (it removes its container, volume and folder, and keeps the row)."""

    list_display = ["name", "team", "status", "image", "memory_mb", "cpus", "network_mode"]
    list_filter = ["status", "team"]


@admin.register(ChecklistItem)
class ChecklistItemAdmin(admin.ModelAdmin):
    """A team's manual checklist items (made from the original list the first time a sandbox
    of the team shows its checklist): word, reorder, add or remove them here."""

    list_display = ["text", "team", "phase", "position"]
    list_filter = ["team", "phase"]
    ordering = ["team", "position"]
