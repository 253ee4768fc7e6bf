"""AccessGov settings, read from the environment (django-environ).

Every variable is documented in README.md ("Configuration"). With DEBUG off (the default) the
defaults are the secure ones: HTTPS-only cookies, HSTS, SSL redirect, a mandatory SECRET_KEY.
"""

import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env()

# `make run` marks its var/ as the demo's (scripts/run writes var/demo): manage.py commands run against
# it (``seed_demo --json`` for scripts) get the demo's settings without DEBUG=1 in the environment, and
# the demo shows the product's own 404 page, not Django's debug list of URLs. Never with DATABASE_URL
# (every real deployment sets one).
DEMO = (VAR_DIR / "demo").exists() and not env.str("DATABASE_URL", default="")
DEBUG = env.bool("DEBUG", default=DEMO)


_MAKE_A_KEY = 'make one with: python -c "import secrets; print(secrets.token_urlsafe(50))"'


def _secret_key() -> str:
    key = env.str("SECRET_KEY", default="")
    # One line on stderr and exit status 1 (SystemExit), not a traceback: this is the operator's first error.
    # (.env.example's placeholder is accepted, as a key Django's `check --deploy` flags: refusing it would stop
    # an install that has not chosen its key yet from starting at all.)
    if key:
        return key
    if not DEBUG:
        raise SystemExit(f"AccessGov will not start: SECRET_KEY must be set when DEBUG is off; {_MAKE_A_KEY}.")
    # Development only: a random key kept under var/ so sessions survive a restart.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    # Before django.contrib.auth: the first app with a command of a name wins, and ours overrides
    # createsuperuser (it records user.created in the ledger).
    "accessgov",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    "guardian",
    "auditlog",
    "django_htmx",
    "django_tables2",
    "django_filters",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
]

MIDDLEWARE = [
    # Outside everything that can answer (the HTTPS redirect, static files, session, auth, OTP), so every
    # response gets the headers, error pages and the redirect included.
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "accessgov.middleware.NoStoreMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "accessgov.middleware.ClientAddressMiddleware",
    # Before the session, sign-in and any view read a parameter, a cookie or a header.
    "accessgov.middleware.RefuseNulMiddleware",
    "accessgov.middleware.AdminDateDrillDownMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # django-otp's OTPMiddleware, reading the user and the OTP device in one statement (accessgov/signed_in.py).
    "accessgov.middleware.SignedInMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "accessgov.middleware.SessionTimeoutMiddleware",
    "accessgov.middleware.OTPRequiredMiddleware",
    # The person's own time zone for this request (issue 18): from the user row already loaded.
    "accessgov.middleware.TimeZoneMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # django-auditlog's, with the ledger's client address (accessgov.middleware.AuditlogMiddleware).
    "accessgov.middleware.AuditlogMiddleware",
    "axes.middleware.AxesMiddleware",
    "accessgov.middleware.DemoNotFoundMiddleware",
    "accessgov.middleware.MethodNotAllowedMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accessgov.context_processors.portal",
            ],
            "builtins": ["accessgov.templatetags.accessgov_tags"],
        },
    },
    {
        # The hot partials only (the approver queue's cards and the decision form), included from Django
        # templates with {% jinja %}: rendering a card cost ~0.9 ms in the Django engine (issue 22).
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "DIRS": [BASE_DIR / "templates" / "jinja2"],
        "APP_DIRS": False,
        "OPTIONS": {"environment": "accessgov.jinja_env.environment", "autoescape": True},
    },
]

# Django's built-in form widgets (every filter form, every page's forms) render through Jinja2, the
# admin's own widget templates through the Django engine (accessgov/renderers.py).
FORM_RENDERER = "accessgov.renderers.JinjaWidgetsRenderer"

# --- Database: SQLite under var/ by default; DATABASE_URL for PostgreSQL -----------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'accessgov.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Persistent connections: a new PostgreSQL connection costs ~3 ms here.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=600)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Only server-side-binding cursors are ever prepared, and only dbsql.prepared_cursor makes them (the
    # fixed per-page statements); Django's own cursors bind client-side and are never prepared.
    # DB_PREPARE_THRESHOLD=0 turns it off (a PgBouncer in transaction mode older than 1.21 needs that).
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
        env.int("DB_PREPARE_THRESHOLD", default=2) or None
    )
else:
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accessgov.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
    # Sign-in through the company's identity provider (accessgov/identity/oidc.py): it authenticates only
    # the callback of a flow this portal started, never a username and password.
    "accessgov.identity.oidc.OIDCBackend",
]
# An account recovery's one-time link to choose a new password (accessgov/recovery.py) works this long.
PASSWORD_RESET_TIMEOUT = env.int("ACCOUNT_RECOVERY_LINK_HOURS", default=24) * 3600
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Times with their zone's name in the admin (issue 18): portal/formats/en/formats.py.
FORMAT_MODULE_PATH = ["portal.formats"]

# --- Static files: vendored in static/, served by whitenoise -------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env.bool("STATIC_MANIFEST", default=not DEBUG)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}


def _static_file_headers(headers, path: str, url: str) -> None:
    """A static file gets a policy of its own (the pages' policy middleware keeps a header already set), for a
    file opened on its own (an SVG can hold script) — it runs nothing, loads nothing, is framed nowhere. A page's
    styles and scripts are subresources, which a policy on their own response does not restrict."""
    headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; sandbox; frame-ancestors 'none'"
    )
    headers["X-Frame-Options"] = "DENY"


WHITENOISE_ADD_HEADERS_FUNCTION = _static_file_headers

# --- Sessions and the OTP step ---------------------------------------------------------------
# Django's database sessions, read by a fixed statement (accessgov/signed_in.py).
SESSION_ENGINE = "accessgov.signed_in"
SESSION_IDLE_TIMEOUT = timedelta(minutes=env.int("SESSION_IDLE_TIMEOUT_MINUTES", default=30))
SESSION_ABSOLUTE_TIMEOUT = timedelta(hours=env.int("SESSION_ABSOLUTE_TIMEOUT_HOURS", default=12))
SESSION_COOKIE_AGE = int(SESSION_ABSOLUTE_TIMEOUT.total_seconds())
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# No script reads it (htmx sends the token from the page's hx-headers): HttpOnly like the session cookie.
CSRF_COOKIE_HTTPONLY = True
CSRF_FAILURE_VIEW = "accessgov.views.errors.csrf_failure"
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_NAME = "__Host-accessgov_session" if SESSION_COOKIE_SECURE else "accessgov_session"
CSRF_COOKIE_NAME = "__Host-accessgov_csrf" if CSRF_COOKIE_SECURE else "accessgov_csrf"
# A fresh TOTP code within this window is required for step-up (high-risk decisions, break-glass).
OTP_STEP_UP_WINDOW = timedelta(minutes=env.int("OTP_STEP_UP_MINUTES", default=5))
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="AccessGov")
# Admins never see (or can scan) another person's TOTP secret.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True
OTP_TOTP_THROTTLE_FACTOR = 1
OTP_STATIC_THROTTLE_FACTOR = 1
# After this many consecutive wrong codes the OTP step is locked for the session (sign in again).
OTP_MAX_FAILURES_PER_SESSION = env.int("OTP_MAX_FAILURES_PER_SESSION", default=5)

# --- Identity providers (docs/IDENTITY.md): the providers themselves are four-eyed database settings --
# Password sign-in for everyone ("everyone"), or only for the break-glass accounts named below
# ("break-glass"): everybody else signs in through an identity provider.
PASSWORD_SIGN_IN = env.str("PASSWORD_SIGN_IN", default="everyone")
if PASSWORD_SIGN_IN not in ("everyone", "break-glass"):
    raise ImproperlyConfigured('PASSWORD_SIGN_IN must be "everyone" or "break-glass".')
BREAK_GLASS_USERNAMES = env.list("BREAK_GLASS_USERNAMES", default=[])
# Seconds to wait for a provider's discovery, keys and token endpoints; discovery documents are reused
# this long. Plain http:// issuers only for a provider on this machine during development and tests.
OIDC_TIMEOUT = env.int("OIDC_TIMEOUT_SECONDS", default=5)
OIDC_DISCOVERY_CACHE_SECONDS = env.int("OIDC_DISCOVERY_CACHE_SECONDS", default=3600)
OIDC_ALLOW_HTTP_ISSUER = env.bool("OIDC_ALLOW_HTTP_ISSUER", default=False)
# SCIM request bodies above this many bytes are refused (413) before they are read.
SCIM_MAX_BODY_BYTES = env.int("SCIM_MAX_BODY_BYTES", default=1_048_576)

# --- Password guessing: django-axes counts the real client address ---------------------------
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "accessgov.net.client_address"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_SENSITIVE_PARAMETERS = ["password", "otp_token"]
# Forwarded headers are trusted only behind a configured proxy: the number of proxies in front.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# Time decisions by the database's clock (accessgov.clock): a host whose clock drifts still ends grants on time.
DATABASE_CLOCK = env.bool("DATABASE_CLOCK", default=True)

# --- Security headers --------------------------------------------------------------------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz(/ready)?$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if TRUSTED_PROXY_COUNT:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Celery: an embedded filesystem broker by default, Redis when CELERY_BROKER_URL says so ----
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
_BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        # The exchange → queue tables (one per queue; kombu's default is ./control, in the repository).
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }
    _default_results = f"file://{VAR_DIR / 'results'}"
    (VAR_DIR / "results").mkdir(exist_ok=True)
else:
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        # kombu's Redis transport with the fix that keeps a worker alive when Redis goes away while it
        # holds messages (portal/broker.py: celery 5.7 + kombu 5.7 crash with an AttributeError).
        CELERY_BROKER_TRANSPORT = "portal.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # A message a worker took and did not acknowledge (it died, or lost Redis) is given back after
        # this. No task waits in a worker for a later time any more (expiry is the scheduler's, from
        # the database); the longest countdown left is a notification's retry (RETRY: at most 600 s),
        # so this must stay well above that, or the retry would be delivered twice.
        "visibility_timeout": env.int("BROKER_VISIBILITY_TIMEOUT_SECONDS", default=3600),
        # Never wait forever on a half-open connection (a Redis behind a dead network path): a read
        # with no answer fails after socket_timeout (above kombu's 1 s BRPOP) and the worker reconnects.
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 10,
    }
    _default_results = CELERY_BROKER_URL
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=_default_results)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker keeps trying to reach the broker however long it is away (celery's default gives up after
# 100 attempts, about 45 minutes), and a task running when the connection drops finishes (acks_late:
# the message comes back after visibility_timeout if its acknowledgement could not be sent).
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# SWEEP_INTERVAL_SECONDS (default 30) is read by portal/celery.py, where the beat schedule lives.
# The expiry scheduler (`manage.py run_scheduler`, docs/OPERATIONS.md): it wakes at the next instant
# something is due and at least every SCHEDULER_INTERVAL_SECONDS; one process at a time holds the lease,
# which lapses SCHEDULER_LEASE_SECONDS after its holder last renewed it (then a standby takes over);
# removals run in up to SCHEDULER_DRAIN_THREADS threads, one system per thread.
SCHEDULER_INTERVAL_SECONDS = env.float("SCHEDULER_INTERVAL_SECONDS", default=1.0)
SCHEDULER_LEASE_SECONDS = env.float("SCHEDULER_LEASE_SECONDS", default=5.0)
SCHEDULER_DRAIN_THREADS = env.int("SCHEDULER_DRAIN_THREADS", default=4)
# How many transactions (each its own connection) write the batches of a large expiry or activation at
# once: 2 keeps both cores of a small server busy (docs/PERFORMANCE.md, expiry sweep); 1 = one at a time.
SWEEP_WRITERS = env.int("SWEEP_WRITERS", default=2)
# Provisioning: retry backoff cap (a target that comes back is retried within this), the age at which
# a removal that is not confirmed raises an alert, and whether webhooks may target internal addresses.
PROVISIONING_MAX_BACKOFF_SECONDS = env.int("PROVISIONING_MAX_BACKOFF_SECONDS", default=30)
PROVISIONING_REMOVAL_ALERT_MINUTES = env.int("PROVISIONING_REMOVAL_ALERT_MINUTES", default=5)
# How long a drain owns an outbox item it took; a worker killed mid-item leaves it to the first drain
# (sweep) after this runs out.
PROVISIONING_LEASE_SECONDS = env.int("PROVISIONING_LEASE_SECONDS", default=60)
# Every statement the PostgreSQL connector runs at a target is bounded: waiting for a lock (a session at
# the target holding a member's row) and running at all. Both well under the lease above — a drain
# sends nothing after half its lease — so a blocked target costs one drain thread a few seconds per
# attempt, and delays only its own removals (retried with backoff).
PROVISIONING_TARGET_LOCK_TIMEOUT_SECONDS = env.float("PROVISIONING_TARGET_LOCK_TIMEOUT_SECONDS", default=5.0)
PROVISIONING_TARGET_STATEMENT_TIMEOUT_SECONDS = env.float("PROVISIONING_TARGET_STATEMENT_TIMEOUT_SECONDS", default=10.0)
if (
    not PROVISIONING_TARGET_LOCK_TIMEOUT_SECONDS
    <= PROVISIONING_TARGET_STATEMENT_TIMEOUT_SECONDS
    < (PROVISIONING_LEASE_SECONDS / 2)
):
    raise ImproperlyConfigured(
        "PROVISIONING_TARGET_LOCK_TIMEOUT_SECONDS <= PROVISIONING_TARGET_STATEMENT_TIMEOUT_SECONDS < "
        "PROVISIONING_LEASE_SECONDS / 2 is required: a statement in flight must end before its item's lease does."
    )
WEBHOOK_ALLOW_PRIVATE_TARGETS = env.bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", default=False)
# Outbound event webhooks: attempts before a delivery is given up, and the longest wait between two
# (the wait doubles from 10 s); with the defaults the last attempt is about 3.4 hours after the first.
EVENT_WEBHOOK_MAX_ATTEMPTS = env.int("EVENT_WEBHOOK_MAX_ATTEMPTS", default=12)
EVENT_WEBHOOK_MAX_BACKOFF_SECONDS = env.int("EVENT_WEBHOOK_MAX_BACKOFF_SECONDS", default=3600)
# Access reviews: reviewers' time to answer (quarterly campaigns), the overdue grace period before a
# campaign closes itself, the new end date given to kept eligibility, and how early owners are told
# that an eligibility is about to end.
REVIEW_DUE_DAYS = env.int("REVIEW_DUE_DAYS", default=14)
REVIEW_GRACE_DAYS = env.int("REVIEW_GRACE_DAYS", default=2)
REVIEW_KEEP_DAYS = env.int("REVIEW_KEEP_DAYS", default=100)
ELIGIBILITY_REMINDER_DAYS = env.int("ELIGIBILITY_REMINDER_DAYS", default=7)
# Four-eyes on policy: changes to role policy, auto-approval rules, admin-granted eligibility and
# connector settings wait for a second admin. Turn off only for a single-admin deployment.
FOUR_EYES_POLICY_CHANGES = env.bool("FOUR_EYES_POLICY_CHANGES", default=True)
# The second pair of eyes must be independent: an account the proposer (or requester) created, or gave
# rights through a change they proposed or approved, within this many days, may not approve their changes
# or access (docs/DECISIONS.md, "Sybil admin").
FOUR_EYES_INDEPENDENCE_DAYS = env.int("FOUR_EYES_INDEPENDENCE_DAYS", default=30)
# Report charts and totals (which scan every matching row) are reused for this long per report, filters
# and viewer; 0 computes them on every page view.
REPORT_SUMMARY_CACHE_SECONDS = env.int("REPORT_SUMMARY_CACHE_SECONDS", default=60)
# Access events are kept at least this long; purge_audit refuses anything younger (7 years by default).
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=2557)
# Evidence packs (docs/EVIDENCE.md): where built packs are kept (shared by web and workers), the
# operator's Ed25519 signing key (PEM text, or a file), the sample size, the longest period, the schedule
# ("monthly", "quarterly", both, or empty) and where scheduled packs are delivered (a directory, or an
# S3-compatible bucket; credentials from the standard AWS_* environment variables).
EVIDENCE_DIR = Path(env.str("EVIDENCE_DIR", default=str(VAR_DIR / "evidence")))
EVIDENCE_SIGNING_KEY = env.str("EVIDENCE_SIGNING_KEY", default="")
EVIDENCE_SIGNING_KEY_FILE = env.str("EVIDENCE_SIGNING_KEY_FILE", default="")
EVIDENCE_SAMPLE_SIZE = env.int("EVIDENCE_SAMPLE_SIZE", default=25)
EVIDENCE_MAX_PERIOD_DAYS = env.int("EVIDENCE_MAX_PERIOD_DAYS", default=366)
EVIDENCE_SCHEDULE = env.list("EVIDENCE_SCHEDULE", default=[])
EVIDENCE_DELIVERY_DIR = env.str("EVIDENCE_DELIVERY_DIR", default="")
EVIDENCE_DELIVERY_S3_BUCKET = env.str("EVIDENCE_DELIVERY_S3_BUCKET", default="")
EVIDENCE_DELIVERY_S3_PREFIX = env.str("EVIDENCE_DELIVERY_S3_PREFIX", default="accessgov-evidence/")
EVIDENCE_DELIVERY_S3_ENDPOINT_URL = env.str("EVIDENCE_DELIVERY_S3_ENDPOINT_URL", default="")
EVIDENCE_DELIVERY_S3_REGION = env.str("EVIDENCE_DELIVERY_S3_REGION", default="")
# The whole upload and its read-back end within this many seconds (a slow link is not a hung one: generous).
EVIDENCE_DELIVERY_S3_TIMEOUT_SECONDS = env.int("EVIDENCE_DELIVERY_S3_TIMEOUT_SECONDS", default=600)
# Activity evidence (docs/ACTIVITY.md): how often the capture task samples sessions and reads server logs;
# how long after a grant's removal its activity is sealed (log lines still on their way); how long sealed
# activity is kept (statement text may hold personal data; purge_activity refuses anything younger); the
# largest body POST /api/v1/activity/ accepts.
ACTIVITY_SAMPLE_SECONDS = env.int("ACTIVITY_SAMPLE_SECONDS", default=5)
ACTIVITY_SEAL_DELAY_SECONDS = env.int("ACTIVITY_SEAL_DELAY_SECONDS", default=60)
ACTIVITY_RETENTION_DAYS = env.int("ACTIVITY_RETENTION_DAYS", default=400)
ACTIVITY_INGEST_MAX_BYTES = env.int("ACTIVITY_INGEST_MAX_BYTES", default=16 * 1024 * 1024)
# /metrics (Prometheus) answers only with "Authorization: Bearer <METRICS_TOKEN>"; unset = disabled (404).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Also write every access event as one JSON line to the "accessgov.events" logger (for a SIEM).
ACCESS_EVENT_JSON_LOG = env.bool("ACCESS_EVENT_JSON_LOG", default=False)
# Integrations (docs/INTEGRATIONS.md): provider URLs (PagerDuty, Jira, Slack, OIDC issuers) may point at
# loopback/private addresses only when the operator says so; how often ticket-bound and incident-bound
# grants are checked against their provider (the safety net under the Jira webhook); how long an OIDC
# issuer's keys are kept before they are fetched again; how long a Slack link code works.
INTEGRATIONS_ALLOW_PRIVATE_URLS = env.bool("INTEGRATIONS_ALLOW_PRIVATE_URLS", default=False)
INTEGRATIONS_SWEEP_SECONDS = env.int("INTEGRATIONS_SWEEP_SECONDS", default=60)
INTEGRATIONS_TIMEOUT_SECONDS = env.float("INTEGRATIONS_TIMEOUT_SECONDS", default=5.0)
# Certificates of a private CA to trust for provider URLs (besides the system's), e.g. a self-hosted Jira.
INTEGRATIONS_CA_FILE = env.str("INTEGRATIONS_CA_FILE", default="")
OIDC_JWKS_CACHE_SECONDS = env.int("OIDC_JWKS_CACHE_SECONDS", default=3600)
SLACK_LINK_CODE_MINUTES = env.int("SLACK_LINK_CODE_MINUTES", default=10)
# Absolute links in emails and Slack messages.
PORTAL_URL = env.str("PORTAL_URL", default="http://127.0.0.1:8000")
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# The beat schedule lives in one place: portal/celery.py (BEAT_SCHEDULE).

# --- Email ---------------------------------------------------------------------------------------
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="AccessGov <accessgov@localhost>")

# --- Caches ------------------------------------------------------------------------------------------
# "default" is process-local (filter choices, report summaries: cheap to recompute per process).
# "shared" is one store for every web and worker process — the API throttle counts there, so three
# gunicorn workers allow a token the limit once, not three times: a database table (made by migrate)
# by default, Redis in production (SHARED_CACHE_URL=redis://redis:6379/2).
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "shared": env.cache_url("SHARED_CACHE_URL", default="dbcache://accessgov_shared_cache"),
}
if "redis" not in CACHES["shared"]["BACKEND"]:
    # Django's database and file caches evict a third of their entries past MAX_ENTRIES (300 by
    # default): one counter per active token per window must never be evicted.
    CACHES["shared"].setdefault("OPTIONS", {}).setdefault("MAX_ENTRIES", 1_000_000)

# --- Object permissions, audit log ---------------------------------------------------------------
GUARDIAN_RAISE_403 = False
ANONYMOUS_USER_NAME = None
AUDITLOG_INCLUDE_ALL_MODELS = False

# --- REST API (/api/v1/): API tokens only; one error format; keyset pages; per-token throttling ----
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "accessgov.api.schema.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["accessgov.api.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["accessgov.api.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "accessgov.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
# Requests per API token, e.g. "600/min", counted in fixed windows in the "shared" cache (every call
# counts, also those refused for a missing scope).
API_THROTTLE_RATE = env.str("API_THROTTLE_RATE", default="600/min")
SPECTACULAR_SETTINGS = {
    "TITLE": "AccessGov API",
    "DESCRIPTION": "Temporary production access: request, wait, use, release. Authenticate with an API token "
    '(Authorization: Bearer agv_…). Errors: {"error": {"code", "message", "fields"?}}.',
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the vendored drf-spectacular-sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": False, "displayOperationId": True},
    "ENUM_NAME_OVERRIDES": {
        "AccessRequestStatusEnum": "accessgov.models.AccessRequest.Status",
        "GrantStatusEnum": "accessgov.models.Grant.Status",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # One record, one line: user text in a message cannot start a forged line (accessgov/logs.py).
    "formatters": {
        "plain": {
            "class": "accessgov.logs.SingleLineFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "filters": {"expected_refusals": {"()": "accessgov.logs.ExpectedRefusalFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["expected_refusals"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
    },
}
