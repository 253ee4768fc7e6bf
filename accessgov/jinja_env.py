"""The Jinja2 environment for the few hot partials rendered by Jinja2 (issue 22): the approver queue's
cards and the decision form. Autoescaped like every Django template; the filters and helpers are the
same functions the Django templates use (``accessgov_tags``, Django's ``defaultfilters``), so a rule
such as how a duration or an instant is shown still has one home. A Django template includes one with
``{% jinja "name.jinja" %}``; a Jinja2 template includes a Django one with ``include_django(name)``.
"""

from functools import lru_cache
from typing import Any

from django.template import defaultfilters, engines
from django.urls import NoReverseMatch, get_script_prefix, reverse
from django.utils.safestring import SafeString, mark_safe
from jinja2 import ChainableUndefined, Environment, pass_context
from jinja2.runtime import Context

from accessgov.templatetags import accessgov_tags as tags
from accessgov.templatetags import report_tags


def _url(name: str, *args: Any) -> str:
    """``reverse(name, args=args)``. Tables link every row to its object (``grant_detail``, one id): Django's
    ``reverse`` costs ≈ 23 µs a call, so a one-id URL is the pattern's text around the id, reversed once per
    name and script prefix, and a URL without arguments is reversed once; anything else, or an id that is
    not a plain integer, goes to ``reverse``."""
    if not args:
        return _without_args(name, get_script_prefix())
    if len(args) == 1 and type(args[0]) is int and args[0] >= 0:
        around = _around_one_id(name, get_script_prefix())
        if around is not None:
            return f"{around[0]}{args[0]}{around[1]}"
    return reverse(name, args=args)


@lru_cache(maxsize=256)
def _without_args(name: str, script_prefix: str) -> str:
    """A URL without arguments (the navigation's twenty), reversed once per name and script prefix."""
    return reverse(name)


_PROBE_ID = 918273645


@lru_cache(maxsize=256)
def _around_one_id(name: str, script_prefix: str) -> tuple[str, str] | None:
    """The text before and after the id in ``name``'s URL, when the URL takes exactly one id."""
    try:
        probe = reverse(name, args=[_PROBE_ID])
    except NoReverseMatch:
        return None
    before, found, after = probe.partition(str(_PROBE_ID))
    if not found or str(_PROBE_ID) in after or reverse(name, args=[7]) != f"{before}7{after}":
        return None
    return before, after


@pass_context
def include_django(context: Context, template_name: str, **extra: Any) -> SafeString:
    """A Django template rendered with this template's variables (no context processors run again)."""
    rendered = engines["django"].get_template(template_name).render({**context.get_all(), **extra})
    return mark_safe(rendered)  # noqa: S308 - the Django engine escaped it


def environment(**options: Any) -> Environment:
    options.pop("autoescape", None)
    # Missing variables render empty and chain (nav.inbox.total on an error page without nav), as in
    # Django templates, which these partials are included from.
    options.setdefault("undefined", ChainableUndefined)
    env = Environment(autoescape=True, **options)  # always: whatever the settings say
    env.globals.update(
        url=_url,
        status=tags.status_tag,
        step_up_note=tags.step_up_state,
        include_django=include_django,
        label=tags.choice_label,
        grant_state_badge=tags.grant_state_badge,
    )
    env.filters.update(
        when=tags.when_filter,
        duration=tags.duration_filter,
        timesince=tags.timesince_filter,
        timeuntil=tags.timeuntil_filter,
        pluralize=defaultfilters.pluralize,
        usernames=report_tags.usernames,
        short_duration=report_tags.short_duration,
        request_outcome=report_tags.request_outcome,
        grant_approvals=report_tags.grant_approvals,
        follow_up=report_tags.follow_up,
        follow_up_status=report_tags.follow_up_status,
        capfirst=defaultfilters.capfirst,
        truncatechars=defaultfilters.truncatechars,
        event_label=tags.event_label_filter,
    )
    return env
