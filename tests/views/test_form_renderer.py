"""Issue 22: the form renderer (accessgov/renderers.py) gives the HTML Django's own renderers give, its
faster select template included."""

import re

import pytest
from django import forms
from django.forms.renderers import DjangoTemplates, Jinja2

from accessgov.renderers import OVERRIDES, JinjaWidgetsRenderer

CHOICES = [("", "---------"), ("a", "Alpha & <b>"), ("Group", [("g1", "One"), ("g2", 'Two "quoted"')]), (3, "Three")]


class Everything(forms.Form):
    plain = forms.ChoiceField(choices=CHOICES, required=False)
    many = forms.MultipleChoiceField(choices=CHOICES, required=False)
    flag = forms.NullBooleanField(required=False)
    styled = forms.ChoiceField(
        choices=CHOICES,
        widget=forms.Select(attrs={"class": "x", "data-on": True, "hidden": False, "aria-label": "<x>"}),
    )
    text = forms.CharField(required=False)


def _tags(html: str) -> str:
    return re.sub(r">\s+<", "><", html.strip()).replace("&#34;", "&quot;").replace("&#39;", "&#x27;")


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"plain": "a", "many": ["g1", "3"], "flag": "true", "styled": "g2", "text": "<script>"},
        {"plain": "nope", "styled": "", "many": ["zz"]},
    ],
)
@pytest.mark.parametrize("reference", [Jinja2, DjangoTemplates])
def test_every_widget_renders_as_djangos_renderers_render_it(data, reference):
    ours, theirs = (
        Everything(data or None, renderer=JinjaWidgetsRenderer()),
        Everything(data or None, renderer=reference()),
    )
    for name in Everything.base_fields:
        if reference is Jinja2:  # what the renderer used before: byte for byte
            assert str(ours[name]) == str(theirs[name]), name
        else:  # the Django engine's templates: other whitespace, entities written &quot; rather than &#34;
            assert _tags(str(ours[name])) == _tags(str(theirs[name])), name
    assert "django/forms/widgets/select.html" in OVERRIDES
    assert str(ours["plain"]).count("<option") == 5
