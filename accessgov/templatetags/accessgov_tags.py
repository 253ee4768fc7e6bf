from django import template

from accessgov.policies import format_duration

register = template.Library()


@register.filter(name="duration")
def duration_filter(value) -> str:
    """A timedelta as people write it: "1 h 30 min"."""
    return format_duration(value) if value is not None else ""
