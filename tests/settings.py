"""Settings for the test suite: the production settings, with test-only speedups.

The database: DATABASE_URL when it is set (CI sets it for both of its passes). Otherwise the production
path when it can: PostgreSQL on 127.0.0.1:5432 if one answers there (a local developer's usual
server, user postgres; set TEST_DATABASE_URL to choose another), and the embedded SQLite when none does.
``pytest`` prints which one it runs on in its header.
"""

import os


def _local_postgres_url() -> str | None:
    url = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/accessgov")
    try:
        import psycopg

        psycopg.connect(url.replace("/accessgov", "/postgres"), connect_timeout=2).close()
    except (ImportError, OSError, Exception):
        return None
    return url


if "DATABASE_URL" not in os.environ and (local := _local_postgres_url()):
    os.environ["DATABASE_URL"] = local

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("STATIC_MANIFEST", "0")

from portal.settings import *  # noqa: E402, F403

SECURE_SSL_REDIRECT = False
# The suite travels in time (time-machine moves this process's clock, not PostgreSQL's): accessgov.clock then
# reads this process's clock; tests/services/test_clock.py turns it on to check the database's is used.
DATABASE_CLOCK = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SESSION_COOKIE_NAME = "accessgov_session"
CSRF_COOKIE_NAME = "accessgov_csrf"
# Hashing passwords with PBKDF2 costs ~0.3 s each; tests sign in hundreds of times.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
# Report summaries are computed on every view in tests (tests/views/test_reports.py checks the cache itself).
REPORT_SUMMARY_CACHE_SECONDS = 0
