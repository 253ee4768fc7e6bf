"""``/healthz``: database and broker status for load balancers and operators (no secrets)."""

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from portal.celery import app as celery_app


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        return False


def _broker_ok() -> bool:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False


@never_cache
@require_safe  # GET and HEAD: load balancers probe with either
def healthz_view(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    body = {
        "status": "ok" if all(checks.values()) else "degraded",
        **{name: ("ok" if ok else "unavailable") for name, ok in checks.items()},
        "broker_transport": celery_app.conf.broker_url.split("://", 1)[0],
    }
    return JsonResponse(body, status=200 if all(checks.values()) else 503)
