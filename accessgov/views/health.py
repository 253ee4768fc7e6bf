"""``/healthz`` and ``/healthz/ready``: status for load balancers and operators (no secrets).

``/healthz`` is the whole picture: 503 when the database, the broker or the static files are missing.
``/healthz/ready`` is for a load balancer or an orchestrator's readiness probe: 503 only when this process
cannot serve pages (no database, static files not collected); a broker outage is reported but still 200,
because the portal serves and decides through one (docs/OPERATIONS.md) — probing ``/healthz`` there would
take a working portal out of rotation. Both answer the same body."""

from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
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


_static_found = False  # once found, the manifest stays (read once per process, not per probe)


def _static_ok() -> bool:
    """The hashed static files' manifest is there (``collectstatic`` ran): without it every page is a 500."""
    global _static_found
    if _static_found or not isinstance(staticfiles_storage, ManifestFilesMixin):
        return True
    try:
        _static_found = staticfiles_storage.read_manifest() is not None
    except Exception:
        return False
    return _static_found


def _answer(needed: tuple[str, ...]) -> JsonResponse:
    checks = {"database": _database_ok(), "broker": _broker_ok(), "static": _static_ok()}
    body = {
        "status": "ok" if all(checks.values()) else "degraded",
        **{name: ("ok" if ok else "unavailable") for name, ok in checks.items()},
        "broker_transport": celery_app.conf.broker_url.split("://", 1)[0],
    }
    return JsonResponse(body, status=200 if all(checks[name] for name in needed) else 503)


@never_cache
@require_safe  # GET and HEAD: load balancers probe with either
def healthz_view(request: HttpRequest) -> JsonResponse:
    return _answer(("database", "broker", "static"))


@never_cache
@require_safe
def ready_view(request: HttpRequest) -> JsonResponse:
    return _answer(("database", "static"))
