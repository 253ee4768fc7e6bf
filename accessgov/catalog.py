"""System and role choice lists for filter forms, built in one query and kept in the process.

A filter form listing 1,000 roles through Django's per-option widget templates cost 100+ ms of every
list page at scale. Here the (id, label) lists are read once per ``CACHE_SECONDS`` per process
(and dropped whenever a system or role is saved or deleted in this process), and ``QuickSelect``
renders a <select> in one pass. They are plain objects in this process's memory, not in Django's
local-memory cache: that cache pickles every value, and unpickling the 1,000 roles cost 0.12 ms of each
list page. A viewer's narrower options (an approver's catalogue) are kept with them, by the set of ids.
"""

import time
from collections.abc import Callable
from typing import Any

import django_filters
from django import forms
from django.db.models.signals import post_delete, post_save
from django.forms.utils import flatatt
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from accessgov import inputs, permissions
from accessgov.models import Role, System

CACHE_SECONDS = 60
_KEPT_OPTION_LISTS = 512  # per source: distinct viewers' catalogues kept at once; past it, the list starts again
_kept: dict[Any, tuple[float, Any]] = {}


def _keep(key: Any, build: Callable[[], Any]) -> Any:
    now = time.monotonic()
    hit = _kept.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    if len(_kept) > 4 + 2 * _KEPT_OPTION_LISTS:
        forget()
    value = build()
    _kept[key] = (now + CACHE_SECONDS, value)
    return value


def system_choices() -> list[tuple[int, str]]:
    return _keep("systems", lambda: list(System.objects.order_by("name").values_list("pk", "name")))


def role_choices() -> list[tuple[int, str]]:
    def build() -> list[tuple[int, str]]:
        rows = Role.objects.order_by("system__name", "name").values_list("pk", "system__name", "name")
        return [(pk, f"{system} · {name}") for pk, system, name in rows]

    return _keep("roles", build)


def forget(**_kwargs) -> None:
    _kept.clear()


def connect() -> None:
    """Called from AppConfig.ready: a saved or deleted system or role drops the kept lists."""

    for model in (System, Role):
        post_save.connect(forget, sender=model, dispatch_uid=f"catalog-save-{model.__name__}")
        post_delete.connect(forget, sender=model, dispatch_uid=f"catalog-delete-{model.__name__}")


def _options_html(source: str, allowed: frozenset[int] | None) -> SafeString:
    """The <option>s of ``source`` (only ``allowed`` ids unless None), with the empty choice first."""

    def build() -> SafeString:
        choices = SOURCES[source]()
        if allowed is not None:
            choices = [choice for choice in choices if choice[0] in allowed]
        return format_html_join("", '<option value="{}">{}</option>', [("", "---------"), *choices])

    return _keep(("html", source, allowed), build)


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
        options = _options_html(self.source, None if self.allowed is None else frozenset(self.allowed))
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


def system_filter(field_name: str, label: str = "System", **kwargs) -> IdFilter:
    return IdFilter(field_name=field_name, label=label, min_value=1, widget=QuickSelect(source="systems"), **kwargs)


def role_filter(field_name: str = "role", label: str = "Role") -> IdFilter:
    return IdFilter(field_name=field_name, label=label, min_value=1, widget=QuickSelect(source="roles"))


SOURCES = {"systems": system_choices, "roles": role_choices}
