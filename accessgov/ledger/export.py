"""The SQL behind the audit trail's CSV export on PostgreSQL (``views/audit.audit_export_view``): the
filtered events formatted and neutralised in SQL, for ``COPY ... TO STDOUT``. Its ORM twin is the
view's Python row path; ``tests/views/test_audit_views.py`` checks both give the same cells."""

from django.db import connection
from django.db.models import QuerySet

from accessgov import exports
from accessgov.models import AccessEvent, AccessRequest, Grant, Role, System, User

# The export's header: its Python rows (the view) and the SELECT below give these columns, in this order.
EXPORT_COLUMNS = [
    "sequence",
    "occurred_at",
    "event_type",
    "actor",
    "client_address",
    "access_request_id",
    "grant_id",
    "grantee",
    "system",
    "role",
    "reason",
    "data",
    "prev_hash",
    "hash",
]


def events_copy_select(events: QuerySet[AccessEvent]) -> tuple[str, tuple]:
    """The SELECT of the export's columns (EXPORT_COLUMNS) for ``events``, oldest first."""
    ids_sql, params = events.order_by().values("pk").query.sql_with_params()
    qn = connection.ops.quote_name
    event_table, role_table, system_table, grant_table, request_table, user_table = (
        qn(m._meta.db_table) for m in (AccessEvent, Role, System, Grant, AccessRequest, User)
    )
    safe = exports.sql_safe
    columns = ", ".join(
        [
            "e.sequence",
            exports.sql_utc_seconds("e.occurred_at"),
            safe("e.event_type"),
            safe("e.actor_label"),
            "host(e.client_address)",
            "e.access_request_id",
            "e.grant_id",
            safe("coalesce(gu.username, ru.username, '')"),  # the grant's holder, else the requester
            safe("coalesce(s.name, '')"),
            safe("coalesce(r.name, '')"),
            safe("e.reason"),
            safe("e.data::text"),
            "e.prev_hash",
            "e.hash",
        ]
    )
    sql = (
        f"SELECT {columns} FROM {event_table} e "  # noqa: S608 - fixed SQL; filter values are bound params
        f"LEFT JOIN {role_table} r ON r.id = e.role_id LEFT JOIN {system_table} s ON s.id = r.system_id "
        f"LEFT JOIN {grant_table} g ON g.id = e.grant_id LEFT JOIN {user_table} gu ON gu.id = g.user_id "
        f"LEFT JOIN {request_table} ar ON ar.id = e.access_request_id "
        f"LEFT JOIN {user_table} ru ON ru.id = ar.requester_id "
        f"WHERE e.id IN ({ids_sql}) ORDER BY e.sequence"
    )
    return sql, params
