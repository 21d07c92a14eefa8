from django.contrib import admin

from controlpanel.http import client_ip

from .models import AuditEvent
from .services import audit_record


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the admin shows and never adds, changes or deletes, even for superusers: they change
    only through the panel's own code."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """The trail is append-only."""

    list_display = ["seq", "created_at", "actor_name", "action", "target", "source_ip"]
    list_filter = ["action"]
    search_fields = ["target", "actor_name"]


class AuditedAdminMixin:
    """Every add, change and delete made through this admin is an audit event, written in the
    admin's own transaction. The admin calls these three hooks for every write it makes (forms,
    inlines, password changes and the bulk delete action alike)."""

    def audit_team_id(self, obj) -> int | None:
        """The team an object belongs to, so that team members can see the event."""
        return None

    def _audit(self, request, verb: str, obj, details: dict) -> None:
        audit_record(
            actor=request.user,
            action=f"admin.{obj._meta.model_name}.{verb}",
            target=str(obj)[:255],
            details=details,
            source_ip=client_ip(request),
            team_id=self.audit_team_id(obj),
        )

    def log_addition(self, request, obj, message):
        self._audit(request, "add", obj, {"change": message})
        return super().log_addition(request, obj, message)  # type: ignore[misc]

    def log_change(self, request, obj, message):
        self._audit(request, "change", obj, {"change": message})
        return super().log_change(request, obj, message)  # type: ignore[misc]

    def log_deletions(self, request, queryset):
        for obj in queryset:
            self._audit(request, "delete", obj, {"id": obj.pk})
        return super().log_deletions(request, queryset)  # type: ignore[misc]


def _audit_axes_admins() -> None:
    """django-axes's admin (lock-outs, failed sign-ins): clearing a lock-out there is a change
    like any other, so it is audited too."""
    from axes import admin as axes_admin
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog

    for model, base in (
        (AccessAttempt, axes_admin.AccessAttemptAdmin),
        (AccessLog, axes_admin.AccessLogAdmin),
        (AccessFailureLog, axes_admin.AccessFailureLogAdmin),
    ):
        if admin.site.is_registered(model):
            admin.site.unregister(model)
        admin.site.register(model, type(f"Audited{base.__name__}", (AuditedAdminMixin, base), {}))


_audit_axes_admins()
