"""The form renderer: Django's built-in widget and form templates through Jinja2, the rest (the admin's
widgets, packages' own templates) through the Django engine.

Django ships each built-in widget template for both engines (``django/forms/templates`` and
``django/forms/jinja2``, the same HTML, autoescaped in both). Rendering them with the Django engine cost
~0.5 ms per field here, half the server time of a list page with a ten-field filter form; Jinja2 renders
the same templates in about a third of that (docs/PERFORMANCE.md, issue 22).
"""

from django.forms.renderers import BaseRenderer, DjangoTemplates, Jinja2
from django.template import engines
from django.template.exceptions import TemplateDoesNotExist

# Built-in widget templates replaced by ours (templates/jinja2/, the project's Jinja2 engine): same HTML, faster.
OVERRIDES = {"django/forms/widgets/select.html": "accessgov/widgets/select.html"}


class JinjaWidgetsRenderer(BaseRenderer):
    def __init__(self) -> None:
        self._jinja = Jinja2()
        self._django = DjangoTemplates()
        self._engine_for: dict[str, BaseRenderer] = {}  # template name -> the renderer that has it

    def get_template(self, template_name: str):
        if template_name in OVERRIDES:
            return engines["jinja2"].get_template(OVERRIDES[template_name])
        renderer = self._engine_for.get(template_name)
        if renderer is not None:
            return renderer.get_template(template_name)
        try:
            template = self._jinja.get_template(template_name)
            self._engine_for[template_name] = self._jinja
        except TemplateDoesNotExist:
            template = self._django.get_template(template_name)
            self._engine_for[template_name] = self._django
        return template
