"""Django and Celery settings, read from the environment (12-factor).

This is the one module that reads the environment. Every variable is listed, with its default, in
``.env.example``; a local ``.env`` is loaded when present and never overrides real environment
variables. SQLite is used when ``DATABASE_URL`` is unset, so ``manage.py`` works with no setup.
"""

from __future__ import annotations

import os
import re
from email.utils import getaddresses
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

from config import families, queues
from config.logging import LOG_FORMATS, logging_config, logging_setup
from config.sentry import init_sentry

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(BASE_DIR / ".env", override=False)


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false)")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name) or str(default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name) or str(default)
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


# --- Django -------------------------------------------------------------------------------------
DEBUG = env_bool("DJANGO_DEBUG", False)
# The fallback key starts with "django-insecure-", so `check --deploy` flags it (security.W009).
SECRET_KEY = env("DJANGO_SECRET_KEY", "django-insecure-local-development-only")
# Rotating the key: the old one moves here (comma-separated) and still verifies what it signed
# (sessions, password-reset and download links) until it is dropped; nothing is signed with it.
SECRET_KEY_FALLBACKS = env_list("DJANGO_SECRET_KEY_FALLBACKS", "")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
# Where users reach the web app: scheme and host (and port), no path. Links made outside a
# request (a worker mailing a download link, app/downloads.py) start with it; a request's own
# Host header is never used for them. Set it in production: the default links to localhost.
SITE_URL = env("SITE_URL", "http://localhost:8000").rstrip("/")
if not re.fullmatch(r"https?://[^/?#@\s]+", SITE_URL):
    raise ImproperlyConfigured(
        f"SITE_URL={SITE_URL!r} is not a scheme and host, e.g. https://example.com"
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "ninja",  # its static files: the API docs work without a CDN
    "app",
    # Every family package in tasks/ (config/families.py): dropping a folder in is all it takes.
    *families.family_apps(),
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "app.context.CorrelationIdMiddleware",
    # Before anything reads the query, a form or the session: refuses NUL characters (a 400).
    "app.input.InputCheckMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Under /api/: a session user's writes need the CSRF token (django-ninja exempts its views),
    # and Django's 404 page and the plain-text 405 become JSON errors too.
    "app.api.session_csrf",
    "app.api.json_errors",
]

ROOT_URLCONF = "config.urls"
LOGIN_URL = "admin:login"  # the jobs page (login_required) sends visitors there
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",  # unset or empty
        # Persistent connections, one per thread, checked before reuse. Workers keep theirs
        # across tasks (CELERY_DB_REUSE_MAX below). A psycopg pool measured about 12% slower on
        # tracked jobs: each task took a connection from it and checked it with a round trip.
        # Workers write job records with prepared statements (app/statements.py): behind
        # PgBouncer in transaction mode, 1.21 or later with max_prepared_statements set.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory, so worker processes started by the tests see the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}
    # The web app and the workers write to one file at once. A transaction that reads first
    # and writes later (the after-commit publish marking its outbox row sent) fails at once
    # with "database is locked" when another writer got there in between: SQLite's busy
    # timeout cannot help a read lock waiting to become a write lock. IMMEDIATE takes the
    # write lock at BEGIN, where the timeout applies; WAL lets reads go on during a write
    # (synchronous stays FULL: a commit survives a power cut); 20 s outlasts a publish waiting
    # for its confirm (app/outbox.py's CONFIRM_TIMEOUT) with the lock held.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Uploaded and generated files (exports, images, email attachments): Django's default storage.
# S3-compatible storage is a django-storages setting change (README, "Files").
MEDIA_ROOT = Path(env("MEDIA_ROOT") or BASE_DIR / "media")
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Production hardening; `manage.py check --deploy` is clean when DJANGO_DEBUG is off and a real
# DJANGO_SECRET_KEY is set. Behind a TLS-terminating proxy, set DJANGO_SECURE_PROXY_SSL_HEADER=1.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
# Load balancers probe over plain HTTP; Prometheus scrapes a process directly on the private
# network (README, "Metrics"), with its token.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
# The header only makes the site eligible; joining the browsers' preload list is a manual step.
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", not DEBUG)
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Celery (read by config/celery.py through the CELERY_ namespace) ----------------------------
# Every name here is checked against celery/app/defaults.py of the installed version (5.7).
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
CELERY_BROKER_URL = env("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
# Publisher confirms: apply_async returns only once RabbitMQ has the message.
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# Keep retrying the broker when a process starts before RabbitMQ (compose, reboots).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# JSON only: pickle deserialisation would run code sent by anyone who can publish.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Job outcomes are tracked by the template's own records, not by a Celery result backend.
CELERY_TASK_IGNORE_RESULT = True
# Ack after the task ran, so a crash mid-task leaves the message to be delivered again.
CELERY_TASK_ACKS_LATE = True
# ...even when the pool child is killed (SIGKILL, OOM): requeue instead of ack.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# ...but as a counted retry, so a job that always kills its worker ends dead, not in a loop.
CELERY_TASK_RETRY_ON_WORKER_LOST = True
# A failed or timed-out job is rejected without requeue: RabbitMQ dead-letters it to <queue>.dead.
# (app/jobs.py's JobRequest makes the hard time limit dead-letter rather than requeue.)
CELERY_TASK_ACKS_ON_FAILURE = False
CELERY_TASK_ACKS_ON_TIMEOUT = False
# Unacked messages are requeued by RabbitMQ on connection loss; stop their copies here too.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# One message per pool slot: long jobs are not hoarded by a busy worker. Procfile workers tune it.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Time limits: the soft one raises SoftTimeLimitExceeded in the task (a failure -> dead letter);
# the hard one kills the child. Both stay under RabbitMQ's 30-minute consumer_timeout. Only the
# prefork pool (bin/worker-cpu) enforces them: on the threads pool (bin/worker-io) a job bounds
# its own waits, with a timeout on every network call.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360)
# Our worker consumer dead-letters messages whose body cannot be decoded (Celery acks them), and
# publishes monitoring events without confirms (waiting for them hung the threads pool).
CELERY_WORKER_CONSUMER = "app.consumer:DeadLetteringConsumer"
# Logging is configured by Django's LOGGING (config/logging.py), not replaced by Celery.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Task events, which Flower shows, from a worker's first job on. Flower switches them on itself,
# but only once it runs and asks: jobs of the first seconds after a start were missing from it.
# They cost a worker a little CPU per job (make bench: events_drain_ratio_vs_no_events); with no
# Flower listening, RabbitMQ drops them. Set it to 0 if you do not run Flower. Task-sent events
# stay off: each would be one more publish on the web request's path.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-send-task-events
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_WORKER_SEND_TASK_EVENTS", True)
# Celery's Django fixup closes the database connection around every task: a new PostgreSQL
# backend per job (about 10 ms of database CPU; tracked jobs ran at a tenth of the untracked
# rate). This turns that off; config/celery.py closes only obsolete or broken connections, as
# Django does around each request.
CELERY_DB_REUSE_MAX = 10**9
CELERY_TASK_QUEUES = queues.TASK_QUEUES
CELERY_TASK_ROUTES = queues.TASK_ROUTES
CELERY_TASK_DEFAULT_QUEUE = queues.DEFAULT_QUEUE
CELERY_TASK_DEFAULT_EXCHANGE = queues.TASK_EXCHANGE.name
CELERY_TASK_DEFAULT_ROUTING_KEY = queues.DEFAULT_QUEUE
# A route to a queue missing from config/queues.py is a mistake, not a queue to invent.
CELERY_TASK_CREATE_MISSING_QUEUES = False
# django-celery-beat's database scheduler, with a lock so that one beat sends and a second one
# stands by, and crontabs that follow daylight-saving changes (app/beat.py; README "Run two
# beats safely").
CELERY_BEAT_SCHEDULER = "app.beat:BeatScheduler"
CELERY_TIMEZONE = TIME_ZONE

# --- Jobs (app/) -------------------------------------------------------------------------------
# Job records, sent outbox rows and effect claims older than this are pruned by a periodic job.
JOBS_RETENTION_DAYS = env_int("JOBS_RETENTION_DAYS", 30)

# --- Metrics (app/metrics.py, GET /metrics) ---------------------------------------------------
# The bearer token Prometheus sends. Unset: /metrics answers 404 (app/views/metrics.py).
METRICS_TOKEN = env("METRICS_TOKEN")
if METRICS_TOKEN and not re.fullmatch(r"[A-Za-z0-9._~+/-]{32,}=*", METRICS_TOKEN):
    # RFC 6750's token characters; 32 of them: a short token is guessed, one a header cannot
    # carry as it is never matches.
    raise ImproperlyConfigured(
        "METRICS_TOKEN must be 32 or more letters, digits or -._~+/ (e.g. the output of "
        "python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    )

# --- Periodic jobs (django-celery-beat; app/periodic.py) --------------------------------------
# Tasks the admin may schedule besides those the code schedules (config/schedule.py, each
# family's SCHEDULE): comma-separated task names. The admin checks every one's arguments.
SCHEDULABLE_TASKS = env_list("SCHEDULABLE_TASKS", "")

# --- Alerts (app/alerts.py; README, "What to watch") ----------------------------------------------
# Who gets alert emails (Django's mail_admins): "Ops <ops@example.com>, oncall@example.com".
ADMINS = [(name, address) for name, address in getaddresses([env("DJANGO_ADMINS")]) if address]
if any("@" not in address for _, address in ADMINS):
    raise ImproperlyConfigured(
        f"DJANGO_ADMINS={env('DJANGO_ADMINS')!r} is not a list of email addresses, e.g. "
        "'Ops <ops@example.com>, oncall@example.com'"
    )
# The failure rates look at jobs enqueued this many seconds back, which have ended since.
ALERTS_WINDOW = env_int("ALERTS_WINDOW", 15 * 60)
# Percent of those jobs (per task, and all together) that failed or died, above which it alerts...
ALERTS_FAILURE_RATE = env_float("ALERTS_FAILURE_RATE", 5.0)
# ...once at least this many of them ended: two failures of a job that runs three times an hour
# are worth a look, not a page.
ALERTS_MIN_JOBS = env_int("ALERTS_MIN_JOBS", 20)
# Messages a <queue>.dead may gain between two checks without an alert (0: any growth alerts).
ALERTS_DEAD_LETTER_GROWTH = env_int("ALERTS_DEAD_LETTER_GROWTH", 0)
# Seconds the oldest queued job of a queue may have waited, and the oldest unsent outbox row.
ALERTS_QUEUE_AGE = env_int("ALERTS_QUEUE_AGE", 10 * 60)
ALERTS_OUTBOX_AGE = env_int("ALERTS_OUTBOX_AGE", 5 * 60)
# Alerts are POSTed as JSON here too when set (through app/urlguard.py: a URL inside your own
# network needs OUTGOING_ALLOWED_NETWORKS). Seconds the whole POST may take.
ALERTS_WEBHOOK_URL = env("ALERTS_WEBHOOK_URL")
ALERTS_WEBHOOK_TIMEOUT = env_int("ALERTS_WEBHOOK_TIMEOUT", 5)

# --- Download links (app/downloads.py) ------------------------------------------------------------
# Seconds a download link opens for when its maker gives no expiry of its own
# (download_expiry_default): a week, enough for an email read on Monday about Friday's export.
DOWNLOAD_LINK_MAX_AGE = env_int("DOWNLOAD_LINK_MAX_AGE", 7 * 24 * 60 * 60)

# --- Email (Django's backend; tasks/email sends through it) -----------------------------------
# SMTP by default. An email service provider through django-anymail is a settings change only
# (README, "Email"). EMAIL_URL-style settings stay Django's own names.
EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)  # STARTTLS
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)  # implicit TLS (port 465)
# The I/O worker's threads pool enforces no time limit: every SMTP wait is bounded here.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "webmaster@localhost")
SERVER_EMAIL = env("SERVER_EMAIL", DEFAULT_FROM_EMAIL)

# --- Outgoing requests to user-supplied URLs (app/urlguard.py) --------------------------------
# Networks that outgoing requests may reach although they are not public (loopback, private...):
# empty in production. Tests and a local development stand-in set e.g. "127.0.0.1/32".
OUTGOING_ALLOWED_NETWORKS = env_list("OUTGOING_ALLOWED_NETWORKS", "")

# --- Notifications (tasks/notifications; its conf.py holds the defaults) ----------------------
# SMS go through Twilio when TWILIO_ACCOUNT_SID is set; otherwise they are logged (console).
TWILIO_ACCOUNT_SID = env("TWILIO_ACCOUNT_SID")
TWILIO_AUTH_TOKEN = env("TWILIO_AUTH_TOKEN")
TWILIO_FROM = env("TWILIO_FROM")  # a Twilio number in E.164, or an alphanumeric sender id
TWILIO_MESSAGING_SERVICE_SID = env("TWILIO_MESSAGING_SERVICE_SID")  # used instead of TWILIO_FROM
TWILIO_API_BASE = env("TWILIO_API_BASE")  # empty: https://api.twilio.com (tests: a local server)
# A provider class per channel (dotted path); empty: the family's default for that channel.
NOTIFICATIONS_PROVIDERS = {
    channel: path
    for channel, path in {
        "sms": env("NOTIFICATIONS_SMS_PROVIDER"),
        "push": env("NOTIFICATIONS_PUSH_PROVIDER"),
    }.items()
    if path
}
# The I/O worker's threads pool enforces no time limit: every provider call is bounded here.
NOTIFICATIONS_HTTP_TIMEOUT = env_int("NOTIFICATIONS_HTTP_TIMEOUT", 10)

# --- Logging and errors -------------------------------------------------------------------------
LOG_LEVEL = env("LOG_LEVEL", "INFO")
# json: one JSON object per line, for a log collector; console: aligned key=value lines, for a
# terminal. Web, workers and beat alike (config/logging.py).
LOG_FORMAT = env("LOG_FORMAT", "console" if DEBUG else "json")
if LOG_FORMAT not in LOG_FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use one of {', '.join(LOG_FORMATS)}")
LOGGING = logging_config(level=LOG_LEVEL, log_format=LOG_FORMAT)
logging_setup()

SENTRY_DSN = env("SENTRY_DSN")
init_sentry(
    dsn=SENTRY_DSN,
    environment=env("SENTRY_ENVIRONMENT", "development" if DEBUG else "production"),
    traces_sample_rate=float(env("SENTRY_TRACES_SAMPLE_RATE", "0") or 0),
)
