"""Template filters for the compliance reports (the same derivations the CSV rows use)."""

from datetime import timedelta

from django import template

from accessgov import charts
from accessgov.reports import access_history, approvals, base, break_glass

register = template.Library()


@register.filter
def short_duration(value: timedelta | float | None) -> str:
    """A lag or waiting time: "0.4 s", "3 min 5 s", "2 h 10 min"; "—" when unknown."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return charts.format_seconds(value)


@register.filter
def usernames(value: str | None) -> str:
    return ", ".join(base.names(value))


@register.filter
def request_outcome(access_request, now) -> str:
    return approvals.request_outcome(access_request, now)


@register.filter
def grant_approvals(grant) -> list[access_history.Approval]:
    return access_history.grant_approvals(grant)


@register.filter
def follow_up_status(grant, now) -> str:
    return break_glass.follow_up_status(break_glass.follow_up_of(grant), now)


@register.filter
def follow_up(grant):
    return break_glass.follow_up_of(grant)
