"""Settings for the test suite: the production settings, with test-only speedups.

The environment still decides the database (DATABASE_URL: SQLite by default, PostgreSQL in CI).
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("STATIC_MANIFEST", "0")

from portal.settings import *  # noqa: F403

SECURE_SSL_REDIRECT = False
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
# Report summaries are computed on every view in tests (tests/test_reports.py checks the cache itself).
REPORT_SUMMARY_CACHE_SECONDS = 0
