"""System and role choice lists for filter forms, built in one query and cached.

A filter form listing 1,000 roles through Django's per-option widget templates cost 100+ ms of every
list page at scale. Here the (id, label) lists are read once per CATALOG_CACHE_SECONDS per process
(and dropped whenever a system or role is saved or deleted in this process), and ``QuickSelect``
renders a <select> in one pass.
"""

import django_filters
from django import forms
from django.core.cache import cache
from django.db.models.signals import post_delete, post_save
from django.forms.utils import flatatt
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from accessgov import inputs, permissions
from accessgov.models import Role, System

CACHE_SECONDS = 60
_KEYS = ("catalog:systems", "catalog:roles", "catalog:html:systems", "catalog:html:roles")


def system_choices() -> list[tuple[int, str]]:

    choices = cache.get(_KEYS[0])
    if choices is None:
        choices = list(System.objects.order_by("name").values_list("pk", "name"))
        cache.set(_KEYS[0], choices, CACHE_SECONDS)
    return choices


def role_choices() -> list[tuple[int, str]]:

    choices = cache.get(_KEYS[1])
    if choices is None:
        rows = Role.objects.order_by("system__name", "name").values_list("pk", "system__name", "name")
        choices = [(pk, f"{system} · {name}") for pk, system, name in rows]
        cache.set(_KEYS[1], choices, CACHE_SECONDS)
    return choices


def forget(**_kwargs) -> None:
    cache.delete_many(_KEYS)


def connect() -> None:
    """Called from AppConfig.ready: a saved or deleted system or role drops the cached lists."""

    for model in (System, Role):
        post_save.connect(forget, sender=model, dispatch_uid=f"catalog-save-{model.__name__}")
        post_delete.connect(forget, sender=model, dispatch_uid=f"catalog-delete-{model.__name__}")


def _options_html(name: str, choices) -> str:
    key = f"catalog:html:{name}"
    html = cache.get(key)
    if html is None:
        html = format_html_join("", '<option value="{}">{}</option>', [("", "---------"), *choices()])
        cache.set(key, html, CACHE_SECONDS)
    return html


class QuickSelect(forms.Select):
    """A single-choice <select> whose options are rendered once per cache period (no template per
    option on every page); the chosen option is marked by a string substitution."""

    def __init__(self, *args, source: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.source = source
        self.allowed: set[int] | None = None  # ids in the viewer's catalogue; None: all (auditors)

    def render(self, name, value, attrs=None, renderer=None):
        final = self.build_attrs(self.attrs, attrs)
        final["name"] = name
        if self.allowed is None:
            options = _options_html(self.source, SOURCES[self.source])
        else:
            mine = [choice for choice in SOURCES[self.source]() if choice[0] in self.allowed]
            options = format_html_join("", '<option value="{}">{}</option>', [("", "---------"), *mine])
        if value not in (None, ""):
            mark = format_html('<option value="{}">', value)
            options = options.replace(mark, mark[:-1] + " selected>", 1)
        return format_html("<select{}>{}</select>", flatatt(final), mark_safe(options))  # noqa: S308 - built by format_html_join


def limit_to_catalogue(form: forms.Form, user, now) -> None:
    """Offer in ``form``'s system and role lists only the viewer's catalogue, by the rule the systems
    pages and the API use (``permissions.visible_systems`` / ``visible_roles``); auditors see every
    system and role, from the cached lists."""

    if permissions.is_auditor(user):
        return
    allowed = {
        "systems": lambda: permissions.visible_system_ids(user, now) or set(),
        "roles": lambda: permissions.visible_role_ids(user, now) or set(),
    }
    for field in form.fields.values():
        if isinstance(field.widget, QuickSelect):
            field.widget.allowed = allowed[field.widget.source]()


class IdFilter(django_filters.Filter):
    """Filter by a related object's id, shown as a QuickSelect. The value is only checked to be an
    id (``inputs.IdField``: ASCII digits, within bigint): an id that is not in the list matches
    nothing, so validating against 1,000 choices on every page is not needed."""

    field_class = inputs.IdField


def system_filter(field_name: str, label: str = "System") -> IdFilter:
    return IdFilter(field_name=field_name, label=label, min_value=1, widget=QuickSelect(source="systems"))


def role_filter(field_name: str = "role", label: str = "Role") -> IdFilter:
    return IdFilter(field_name=field_name, label=label, min_value=1, widget=QuickSelect(source="roles"))


SOURCES = {"systems": system_choices, "roles": role_choices}
