from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import ValidationError
from django.http import Http404
from guardian.admin import GuardedModelAdmin as _GuardedModelAdmin

from accessgov.models import Role, System, User

admin.site.site_header = "AccessGov administration"
admin.site.site_title = "AccessGov admin"


def _ensure_pk(model, value) -> None:
    try:
        model._meta.pk.to_python(unquote(str(value)))
    except ValidationError as exc:
        raise Http404("No such object.") from exc


class GuardedModelAdmin(_GuardedModelAdmin):
    """django-guardian's object-permission admin, with malformed ids answered by 404 (it raises 500)."""

    def obj_perms_manage_view(self, request, object_pk):
        _ensure_pk(self.model, object_pk)
        return super().obj_perms_manage_view(request, object_pk)

    def obj_perms_manage_user_view(self, request, object_pk, user_id):
        _ensure_pk(self.model, object_pk)
        _ensure_pk(User, user_id)
        return super().obj_perms_manage_user_view(request, object_pk, user_id)

    def obj_perms_manage_group_view(self, request, object_pk, group_id):
        from django.contrib.auth.models import Group

        _ensure_pk(self.model, object_pk)
        _ensure_pk(Group, group_id)
        return super().obj_perms_manage_group_view(request, object_pk, group_id)


@admin.register(User)
class AccessGovUserAdmin(UserAdmin):
    list_display = ("username", "email", "first_name", "last_name", "is_active", "is_staff")


class RoleInline(admin.TabularInline):
    model = Role
    extra = 0
    fields = ("name", "risk_tier", "default_duration", "max_duration", "approvals_required")


@admin.register(System)
class SystemAdmin(GuardedModelAdmin):
    list_display = ("name", "environment", "slug")
    prepopulated_fields = {"slug": ("name",)}
    search_fields = ("name", "description")
    inlines = [RoleInline]


@admin.register(Role)
class RoleAdmin(GuardedModelAdmin):
    list_display = ("__str__", "risk_tier", "approvals_required", "max_duration", "break_glass_allowed")
    list_filter = ("risk_tier", "system", "break_glass_allowed", "step_up_required")
    search_fields = ("name", "system__name")
