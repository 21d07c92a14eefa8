from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group

from audit.admin import AuditedAdminMixin
from controlpanel.http import client_ip
from controlpanel.names import bidi_problem

from . import policy
from .forms import TeamPolicyForm
from .models import Membership, Team, TeamPolicy


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1


class TeamForm(forms.ModelForm):
    """The admin's form of a team (every field: the admin supplies the model and its fields)."""

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if problem := bidi_problem(name, "A team's name"):
            raise forms.ValidationError(problem)
        return name


@admin.register(Team)
class TeamAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = TeamForm
    list_display = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]

    def audit_team_id(self, obj):
        return obj.pk


@admin.register(Membership)
class MembershipAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["user", "team", "role"]
    list_filter = ["team", "role"]

    def audit_team_id(self, obj):
        return obj.team_id


@admin.register(TeamPolicy)
class TeamPolicyAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """A team's resource policy: superusers only (a team admin must not raise their own team's
    share of the machine). Saved through teams.policy.policy_set, which audits what changed."""

    form = TeamPolicyForm
    list_display = ["team", *policy.FIELDS]

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

    def get_readonly_fields(self, request, obj=None):
        return ["team"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        saved, _over = policy.policy_set(
            actor=request.user,
            team=obj.team,
            values={f: form.cleaned_data.get(f) for f in policy.FIELDS},
            source_ip=client_ip(request),
        )
        obj.pk = saved.pk

    def audit_team_id(self, obj):
        return obj.team_id


# Users and groups are edited through audited admins too.
User = get_user_model()
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class AuditedUserAdmin(AuditedAdminMixin, UserAdmin):
    pass


@admin.register(Group)
class AuditedGroupAdmin(AuditedAdminMixin, GroupAdmin):
    pass
