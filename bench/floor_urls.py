"""Bench-only URLs (bench/page_floor.py): the portal's own URLs plus ``/floor/grants/``, the grants list
with nothing but what any implementation of it must do, and two steps between it and the real page: the
floor plus the page's filterset (``/floor/filterset/``), and the floor with the page's filterset and ORM
read instead of hand-written SQL (``/floor/orm/``). Never part of the product: only the bench sets
``ROOT_URLCONF`` to this module, inside its own process."""

from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import include, path
from django.utils import timezone
from jinja2 import Template

from accessgov import filters, permissions
from accessgov.context_processors import portal
from accessgov.views import grants

# The grants list's default order (newest first) and the columns its rows show, one statement.
ROWS_SQL = """
SELECT g.id, g.is_break_glass, u.username, s.name, r.name, g.status, g.starts_at, g.expires_at, g.ended_at,
       g.end_reason
FROM accessgov_grant g
JOIN accessgov_user u ON u.id = g.user_id
JOIN accessgov_role r ON r.id = g.role_id
JOIN accessgov_system s ON s.id = r.system_id
{where}
ORDER BY g.starts_at DESC, g.id DESC
LIMIT 51"""
# Whom a viewer who is not an auditor sees (``permissions.visible_grants``): their own grants and those of the
# roles they oversee.
OVERSEEN = "WHERE g.user_id = %s OR g.role_id = ANY(%s)"

ROWS_TEMPLATE = """{%- for g in rows %}
      <tr>
        <td data-label="#"><a href="/grants/{{ g[0] }}/">#{{ g[0] }}</a>{% if g[1] %} <span class="badge bad">BG</span>{% endif %}</td>
        <td data-label="Holder">{{ g[2] }}</td>
        <td data-label="Role">{{ g[3] }} · {{ g[4] }}</td>
        <td data-label="Status">{{ status(g[5], g[5]) }}</td>
        <td data-label="From">{{ g[6]|when }}</td>
        <td data-label="Until">{{ g[7]|when }}</td>
        <td data-label="Ended">{% if g[8] %}{{ g[9] }}{% endif %}</td>
      </tr>
{%- endfor %}"""

_template: dict[int, Template] = {}  # viewer's id -> the page around the rows


def use_page_around_rows(viewer_id: int, page_html: str) -> None:
    """Compile the floor's template for one viewer once: ``page_html`` (the page as that viewer sees it)
    before and after its table rows, as literal text."""
    start, end = page_html.index("<tbody>") + len("<tbody>"), page_html.index("</tbody>")
    env = engines["jinja2"].env  # type: ignore[attr-defined]
    literal = "{{% raw %}}{}{{% endraw %}}".format
    _template[viewer_id] = env.from_string(literal(page_html[:start]) + ROWS_TEMPLATE + literal(page_html[end:]))


def floor(request: HttpRequest) -> HttpResponse:
    user = request.user
    permissions.scope(user)  # the viewer's scope: one query
    portal(request)  # the navigation's reads (the badges)
    if permissions.is_auditor(user):
        sql, params = ROWS_SQL.format(where=""), []
    else:
        # The filter form's options are the viewer's catalogue: its read, though the form itself is literal text.
        permissions.visible_role_ids(user, timezone.now())
        sql, params = ROWS_SQL.format(where=OVERSEEN), [user.pk, permissions.overseen_role_ids(user)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return HttpResponse(_template[user.pk].render(rows=rows[:50], now=timezone.now()))


def floor_with_filterset(request: HttpRequest) -> HttpResponse:
    """The floor, after building and validating the page's filterset (its rows still by hand)."""
    grant_filter = grants._grant_filter(request)
    grant_filter.is_valid()
    grant_filter.qs  # noqa: B018 - builds the filtered queryset, as the page does
    return floor(request)


def floor_with_orm(request: HttpRequest) -> HttpResponse:
    """The page's filterset and ORM read (model instances), rendered by the floor's template."""
    grant_filter = grants._grant_filter(request)
    rows = grant_filter.qs.only(*filters.GRANT_LIST_COLUMNS) if grant_filter.is_valid() else None
    page = filters.page_of(grant_filter, rows, after="", size=filters.PAGE_SIZE)
    portal(request)
    shown = [
        (g.pk, g.is_break_glass, g.user.username, g.role.system.name, g.role.name, g.status, g.starts_at,
         g.expires_at, g.ended_at, g.end_reason)
        for g in page.rows
    ]  # fmt: skip
    return HttpResponse(_template[request.user.pk].render(rows=shown, now=timezone.now()))


urlpatterns = [
    path("floor/grants/", floor),
    path("floor/filterset/", floor_with_filterset),
    path("floor/orm/", floor_with_orm),
    path("", include("portal.urls")),
]
