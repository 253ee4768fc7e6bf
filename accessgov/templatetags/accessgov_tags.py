from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import cast

from django import template
from django.apps import apps
from django.middleware.csrf import get_token
from django.template import engines
from django.template.backends.jinja2 import Jinja2
from django.utils import timezone as dj_timezone
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince
from django.utils.translation import get_language

from accessgov import clock, exports, otp
from accessgov.models import AccessEvent
from accessgov.policies import format_duration

register = template.Library()


# --- timesince / timeuntil: Django's filters (overridden here, this library being a builtin), with the
# answer for spans under four weeks remembered: below a month it depends only on the whole minutes
# (no calendar months or years in it), and computing it was ≈ 40 µs a call, two per approver-queue card.
_FOUR_WEEKS = timedelta(days=28)
_SPAN_BASE = datetime(2001, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=4096)
def _span_in_minutes(minutes: int, language: str | None) -> str:
    return timesince(_SPAN_BASE, _SPAN_BASE + timedelta(minutes=minutes))


def _timesince(d, now, reversed: bool) -> str:
    if isinstance(d, datetime) and (now is None or isinstance(now, datetime)):
        if now is None:
            now = datetime.now(d.tzinfo if dj_timezone.is_aware(d) else None)
        elif dj_timezone.is_aware(now) and dj_timezone.is_aware(d):
            now = now.astimezone(d.tzinfo)  # as Django does: a wall-clock span in d's zone
        if dj_timezone.is_aware(d) == dj_timezone.is_aware(now):
            delta = (d - now) if reversed else (now - d)
            if delta < _FOUR_WEEKS:
                return _span_in_minutes(max(delta // timedelta(minutes=1), 0), get_language())
    return timesince(d, now, reversed=reversed)


def _span_filter(value, arg, *, reversed: bool) -> str:
    """Django's ``timesince``/``timeuntil`` filter body: empty for no value or an unusable one."""
    if not value:
        return ""
    try:
        return _timesince(value, arg or None, reversed=reversed)
    except (ValueError, TypeError):
        return ""


@register.filter("timesince", is_safe=False)
def timesince_filter(value, arg=None) -> str:
    """Django's ``timesince`` filter (same answers: tests/views/test_template_filters.py), faster."""
    return _span_filter(value, arg, reversed=False)


@register.filter("timeuntil", is_safe=False)
def timeuntil_filter(value, arg=None) -> str:
    """Django's ``timeuntil`` filter (same answers: tests/views/test_template_filters.py), faster."""
    return _span_filter(value, arg, reversed=True)


@register.filter
def grant_state(grant, now) -> str:
    """``Grant.state_at(now)``: scheduled, active, or how it ended (the clock decides expiry)."""
    return grant.state_at(now)


@register.filter
def grant_ended_at(grant, now):
    """``Grant.ended_at_as_of(now)``: when it ended, its ``expires_at`` once past even if not swept."""
    return grant.ended_at_as_of(now)


@register.simple_tag
def grant_state_badge(grant, now) -> str:
    """The badge of a grant's state at ``now`` (``Grant.state_at``), the same on every page."""
    return _state_badge(grant.state_at(now), grant.STATE_LABELS)


def _state_badge(state: str, labels: dict) -> str:
    return status_tag(state, labels.get(state, state))


@register.filter(name="duration")
def duration_filter(value) -> str:
    """A timedelta as people write it: "1 h 30 min"."""
    return format_duration(value) if value is not None else ""


# Django's ``date`` filter resolves the active time zone and walks a format
# string per call; on a 50-row table its two dates per row were a tenth of the page's server time.
@register.filter(name="utc")
def utc_filter(value) -> str:
    """An aware datetime as ``2026-11-24 09:30`` (UTC); empty for None."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else ""


@register.filter(name="when")
def when_filter(value, seconds: bool = False) -> str:
    """An aware datetime in the viewer's time zone (activated per request by the time-zone middleware),
    as ``<time datetime="…Z" title="… UTC">2026-11-24 10:30 CET</time>``: the UTC instant on hover and
    for machines. Empty for None. Every table row shows two or three: formatted by ``isoformat`` (a third of
    ``strftime``'s cost), the zone's name escaped once per name."""
    if not value:
        return ""
    instant = value if value.tzinfo is UTC else value.astimezone(UTC)
    utc = instant.isoformat(" ", "seconds")  # 2026-11-24 09:30:05+00:00
    local = instant.astimezone(dj_timezone.get_current_timezone())
    width = 19 if seconds else 16
    # A zone at UTC's offset shows UTC's wall clock: one formatting less.
    local_text = utc[:width] if not local.utcoffset() else local.isoformat(" ", "seconds")[:width]
    return SafeString(  # digits, and the zone's name escaped
        f'<time datetime="{utc[:10]}T{utc[11:19]}Z" title="{utc[:width]} UTC">'
        f"{local_text} {_escaped_zone_name(local.tzname())}</time>"
    )


@register.filter(name="when_text")
def when_text_filter(value, seconds: bool = False) -> str:
    """``when`` for an instant stored as ISO 8601 text (an event's data); the text itself if it is not one."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return when_filter(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC), seconds)
    return when_filter(value, seconds)


@cache
def _escaped_zone_name(name: str | None) -> str:
    return escape(name or "UTC")


@register.filter(name="utc_seconds")
def utc_seconds_filter(value) -> str:
    """An aware datetime as ``2026-11-24 09:30:05`` (UTC); empty for None."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


@register.simple_tag(takes_context=True)
def export_query(context, filterset) -> str:
    """The query of a list's Export link: the page's own, cut to the names the export takes (its filter form's
    fields; ``exports.export_query``)."""
    return exports.export_query(context["request"].GET, filterset.form.fields)


@register.simple_tag(name="status")
def status_tag(status: str, label: str) -> str:
    """A status badge (the per-row ``{% include %}`` it replaces cost a template lookup per row). A handful of
    statuses and labels, each badge built once (``format_html`` was a fifth of a list's row: ≈ 15 µs)."""
    if type(status) is str and type(label) is str:
        return _status_badge(status, label)
    return _status_badge.__wrapped__(status, label)  # a lazy or safe string: built each time


@lru_cache(maxsize=512)
def _status_badge(status: str, label: str) -> str:
    return format_html('<span class="status status-{}">{}</span>', status, label)


@register.filter(name="utc_iso")
def utc_iso_filter(value) -> str:
    """An aware datetime in ISO 8601 (UTC), for ``<time datetime=…>``; empty for None."""
    return value.astimezone(UTC).isoformat() if value else ""


@register.filter(name="event_label")
def event_label_filter(event_type: str) -> str:
    """An access event type's label (``get_event_type_display`` rebuilds a dict of ~40 choices per call)."""
    return _event_labels().get(event_type, event_type)


@cache
def _event_labels() -> dict[str, str]:

    return dict(AccessEvent.Type.choices)


def choice_label(instance, field_name: str):
    """``instance.get_<field>_display()`` without rebuilding the field's choices on each call (Django's
    does: ~50 µs; four per approver-queue card)."""
    value = getattr(instance, field_name)
    return _choice_labels(instance._meta.label, field_name).get(value, value)


@cache
def _choice_labels(model_label: str, field_name: str) -> dict:
    return dict(apps.get_model(model_label)._meta.get_field(field_name).flatchoices)


@register.simple_tag(name="step_up_note", takes_context=True)
def step_up_note_tag(context) -> dict:
    """Whether the code field of a step-up form is needed for this session right now, and the sentence
    that says so ("Not needed: you entered a code 2 minutes ago …"): otp.step_up_note, the same rule
    the services apply."""
    return step_up_state(context.get("request"))


def step_up_state(request) -> dict:
    """``step_up_note`` for ``request`` (also the Jinja2 templates' ``step_up_note(request)``)."""

    code_at = otp.session_code_at(request) if request is not None and hasattr(request, "session") else None
    needed, note = otp.step_up_note(code_at, clock.now())
    return {"needed": needed, "note": note}


@register.simple_tag(name="jinja", takes_context=True)
def jinja_tag(context, template_name: str, **extra) -> str:
    """A Jinja2 partial (accessgov/jinja_env.py) rendered with this template's variables and ``extra``."""
    variables = {**context.flatten(), **extra}
    request = context.get("request")
    if request is not None:
        # What Django's Jinja2 backend adds, with the token masked once per partial instead of once per
        # form in it (its lazy csrf_input masks a new one on each use: 24 forms on a queue page).
        token = get_token(request)
        variables.update(
            request=request,
            csrf_token=token,
            csrf_input=format_html('<input type="hidden" name="csrfmiddlewaretoken" value="{}">', token),
        )
    backend = cast(Jinja2, engines["jinja2"])
    rendered = backend.env.get_template(template_name).render(variables)
    return mark_safe(rendered)  # noqa: S308 - Jinja2 autoescaped it
