from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from guardian.admin import GuardedModelAdmin

from accessgov.models import Role, System, User

admin.site.site_header = "AccessGov administration"
admin.site.site_title = "AccessGov admin"


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
    filter_horizontal = ("owners",)
    search_fields = ("name", "description")
    inlines = [RoleInline]


@admin.register(Role)
class RoleAdmin(GuardedModelAdmin):
    list_display = ("__str__", "risk_tier", "approvals_required", "max_duration", "break_glass_allowed")
    list_filter = ("risk_tier", "system", "break_glass_allowed", "step_up_required")
    search_fields = ("name", "system__name")
