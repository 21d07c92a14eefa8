from django.contrib import admin

from .models import Membership, Sandbox, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Sandbox)
class SandboxAdmin(admin.ModelAdmin):
    """Read-only here: sandboxes change only through the panel's services."""

    list_display = ["name", "team", "status", "image", "memory_mb", "cpus", "network_mode"]
    list_filter = ["status", "team"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
