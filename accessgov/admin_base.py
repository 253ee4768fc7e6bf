"""What every AccessGov admin page shares: object-id checks, guarded object permissions proposed as
four-eyes changes, the four-eyes form flow, and read-only pages for state that only services write.
Kept apart from ``accessgov.admin`` so the admin modules of other parts (identity) import it without
importing the registrations."""

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from guardian.admin import GuardedModelAdmin as _GuardedModelAdmin

from accessgov import inputs
from accessgov.exceptions import AccessGovError
from accessgov.models import (
    ChangeRequest,
    User,
)
from accessgov.services import changes as change_services

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
        if request.method == "POST" and self.has_change_permission(request, None):
            user = get_object_or_404(User, pk=user_id)
            return self._propose_permissions(request, object_pk, user=user)
        return super().obj_perms_manage_user_view(request, object_pk, user_id)

    def obj_perms_manage_group_view(self, request, object_pk, group_id):
        _ensure_pk(self.model, object_pk)
        _ensure_pk(Group, group_id)
        if request.method == "POST" and self.has_change_permission(request, None):
            group = get_object_or_404(Group, pk=group_id)
            return self._propose_permissions(request, object_pk, group=group)
        return super().obj_perms_manage_group_view(request, object_pk, group_id)

    def _propose_permissions(self, request, object_pk, *, user=None, group=None):
        """Who approves or owns is policy: the posted permissions become a four-eyes change."""
        obj = get_object_or_404(self.get_queryset(request), pk=object_pk)
        if user is not None:
            form = self.get_obj_perms_manage_user_form(request)(user, obj, request.POST)
        else:
            form = self.get_obj_perms_manage_group_form(request)(group, obj, request.POST)
        if not form.is_valid():
            raise PermissionDenied("Choose permissions from the list.")
        try:
            change = change_services.change_propose_permissions(
                request.user,
                obj=obj,
                user=user,
                group=group,
                perms=set(form.cleaned_data[form.get_obj_perms_field_name()]),
                client_address=getattr(request, "client_address", None),
            )
        except AccessGovError as error:
            raise PermissionDenied(str(error)) from error
        if change is None:
            self.message_user(request, "Nothing changed.")
            return redirect(request.get_full_path())
        request._four_eyes_change = change
        return FourEyesAdminMixin._proposed_response(self, request)


class RefusalAsMessageMixin:
    """A service's refusal (AccessGovError) on an admin form, or on a deletion the admin hands to a service,
    becomes an error message on the same page."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except AccessGovError as error:
            self.message_user(request, str(error), level="error")
            return redirect(request.get_full_path())

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except AccessGovError as error:
            self.message_user(request, str(error), level="error")
            return redirect(request.get_full_path())


def act_on_each(model_admin, request, rows, act, *, name=str) -> int:
    """An admin action that calls a service for each selected row: ``act(row)``; a refusal (AccessGovError)
    becomes an error message naming the row (``name(row)``) and the others go on. Returns how many were done."""
    done = 0
    for row in rows:
        try:
            act(row)
            done += 1
        except AccessGovError as error:
            model_admin.message_user(request, f"{name(row)}: {error}", level="error")
    return done


# Form fields for what admins type into policy and settings forms: whole numbers in ASCII digits, and JSON
# a jsonb column can hold (inputs.py): each of the stock fields let some input through to a 500.
TYPED_INPUT_OVERRIDES: Mapping[type[models.Field], Mapping[str, Any]] = {
    models.JSONField: {"form_class": inputs.StorableJSONField},
    models.IntegerField: {"form_class": inputs.WholeNumberField},
    models.PositiveIntegerField: {"form_class": inputs.WholeNumberField},
    models.PositiveSmallIntegerField: {"form_class": inputs.WholeNumberField},
    models.SmallIntegerField: {"form_class": inputs.WholeNumberField},
    models.DurationField: {"form_class": inputs.PeoplesDurationField},
}


class FourEyesAdminMixin(RefusalAsMessageMixin):
    """Saving a guarded model in the admin proposes the change instead (services.changes): a second
    admin approves it on /changes/. Fields outside ``four_eyes_fields`` are saved directly."""

    formfield_overrides: Mapping[type[models.Field], Mapping[str, Any]] = TYPED_INPUT_OVERRIDES

    four_eyes_kind: str = ""
    four_eyes_fields: set[str] | None = None  # None: every field of the form
    four_eyes_on_create = True  # False where a new object grants nothing yet (a system, a role)

    def _gated(self, form, change: bool) -> list[str]:
        names = [n for n in form.changed_data if self.four_eyes_fields is None or n in self.four_eyes_fields]
        for secret_field in change_services.SECRET_FIELDS & set(names):
            submitted = form.data.get(secret_field, "")
            if not submitted or (change and submitted == form.initial.get(secret_field)):
                names.remove(secret_field)
        if not change:
            names = [f.name for f in self.model._meta.concrete_fields if f.name in form.fields]
            return names if self.four_eyes_on_create else []
        return names

    def save_model(self, request, obj, form, change):
        gated = self._gated(form, change)
        request._four_eyes_change = None
        request._four_eyes_direct = []
        if not gated:
            return super().save_model(request, obj, form, change)
        if change:
            direct = [n for n in form.changed_data if n not in gated and n not in change_services.SECRET_FIELDS]
            if direct:
                fresh = self.model.objects.get(pk=obj.pk)
                for name in direct:
                    setattr(fresh, name, getattr(obj, name))
                fresh.save(update_fields=direct)
                request._four_eyes_direct = [str(form.fields[n].label or n) for n in direct if n in form.fields]
        elif hasattr(obj, "created_by_id"):
            obj.created_by = request.user
        request._four_eyes_change = change_services.change_propose(
            request.user,
            kind=self.four_eyes_kind,
            instance=obj,
            fields=gated,
            client_address=getattr(request, "client_address", None),
        )

    def save_related(self, request, form, formsets, change):
        if getattr(request, "_four_eyes_change", None) is None:
            return super().save_related(request, form, formsets, change)
        for formset in formsets:  # inlines here are read-only; nothing of theirs is saved
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        return None

    def log_addition(self, request, obj, message):
        if getattr(request, "_four_eyes_change", None) is None:
            return super().log_addition(request, obj, message)
        return None

    def log_change(self, request, obj, message):
        if getattr(request, "_four_eyes_change", None) is None:
            return super().log_change(request, obj, message)
        return None

    def _proposed_response(self, request):
        change = request._four_eyes_change
        if change.status == ChangeRequest.Status.APPLIED:
            why = (
                "four-eyes is off"
                if not settings.FOUR_EYES_POLICY_CHANGES
                else "it only takes rights away, which needs no second admin"
            )
            self.message_user(request, f"Applied: {change.summary} ({why}; recorded as change #{change.pk}).")
        else:
            direct = getattr(request, "_four_eyes_direct", [])
            saved = f"Saved at once (no approval needed): {', '.join(direct)}. " if direct else ""
            self.message_user(
                request,
                f"{saved}Proposed as change #{change.pk}: {change.summary}; it takes effect when another admin "
                "approves it.",
                level="warning",
            )
        return redirect("change_detail", pk=change.pk)

    def response_add(self, request, obj, post_url_continue=None):
        if getattr(request, "_four_eyes_change", None) is not None:
            return self._proposed_response(request)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        if getattr(request, "_four_eyes_change", None) is not None:
            return self._proposed_response(request)
        return super().response_change(request, obj)


class ReadOnlyAdmin(admin.ModelAdmin):
    """State is written only by services: the admin shows it and never edits it."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
