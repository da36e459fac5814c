"""Settings shared by every environment. Environment variables are read here and nowhere else.

Embedded defaults (SQLite, in-process channel layer, no Redis) hold until `DATABASE_URL` and
`REDIS_URL` say otherwise. Any variable may instead be given as `<NAME>_FILE`, a path to a
file holding the value (Docker and Kubernetes secrets).
"""

from datetime import timedelta
from pathlib import Path

import django_stubs_ext
import environ

# Django's classes become subscriptable (ModelAdmin[Project]) for the type checker's sake.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.FileAwareEnv()

# The embedded mode's state: its SQLite database, media, mail and the local node's work and cache.
VAR_DIR = Path(env.str("REPROLAB_VAR_DIR", default=str(BASE_DIR / "var")))

# Overridden by production, which requires it; local and test use this development key.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="django-insecure-development-key-not-for-production")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS: list[str] = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",  # first: its runserver serves ASGI (HTTP and WebSocket)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",  # login lockout; see apps/accounts/lockout.py
    "apps.core",
    "apps.accounts",
    "apps.projects",
    "apps.compute",
    "apps.reproducibility",
    "apps.review",
    "apps.environments",
    "apps.courses",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",  # site pages' CSP; a response that sets its own keeps it
    "apps.core.middleware.StaticFilesMiddleware",  # WhiteNoise, async-capable (see apps/core/middleware.py)
    "apps.core.middleware.RequestSizeLimitMiddleware",
    "apps.core.middleware.DatabaseUnavailableMiddleware",  # 503 + Retry-After when the database is down
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as axes requires: turns a lockout into a 429
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

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
            ],
        },
    },
]

DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded mode has concurrent writers (web requests, the local agent's claims): take
    # the write lock when a transaction starts and wait for it, instead of failing "locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=0))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
# Axes first: it refuses a locked-out username or address before any password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "projects:list"
LOGOUT_REDIRECT_URL = "projects:list"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = env.path("DJANGO_MEDIA_ROOT", default=str(VAR_DIR / "media"))
MEDIA_URL = "media/"  # never served directly: downloads go through permission-checked views
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Redis: cache, channel layer and Celery broker; absent means the embedded mode -------------
REDIS_URL: str | None = env.str("REDIS_URL", default=None) or None
# The channel layer's Redis connections per process: at most this many, and a caller waits up to
# REPROLAB_CHANNEL_LAYER_POOL_TIMEOUT seconds for a free one (a burst of WebSocket handshakes
# queues instead of failing "Too many connections").
REPROLAB_CHANNEL_LAYER_MAX_CONNECTIONS = env.int("REPROLAB_CHANNEL_LAYER_MAX_CONNECTIONS", default=50)
REPROLAB_CHANNEL_LAYER_POOL_TIMEOUT = env.float("REPROLAB_CHANNEL_LAYER_POOL_TIMEOUT", default=10.0)

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "apps.core.channel_layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "max_connections": REPROLAB_CHANNEL_LAYER_MAX_CONNECTIONS,
                        "timeout": REPROLAB_CHANNEL_LAYER_POOL_TIMEOUT,
                        # A dead or unreachable Redis fails fast instead of holding a request;
                        # reads wait longer than the layer's 5 s blocking receive.
                        "socket_connect_timeout": 5,
                        "socket_timeout": 15,
                    }
                ]
            },
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "memory://"
    # No broker in the embedded mode: tasks run in-process when enqueued.
    CELERY_TASK_ALWAYS_EAGER = True

CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Above the longest task, or Redis redelivers a task that is still running.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}

# --- REST API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "apps.core.schema.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.exceptions.api_exception_handler",
    # DRF's JSON parser, with a nesting bound: a 5,000-level body is a 400, not a RecursionError.
    "DEFAULT_PARSER_CLASSES": [
        "apps.core.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "NUM_PROXIES": env.int("DJANGO_NUM_PROXIES", default=0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ReproLab API",
    "DESCRIPTION": "Projects, immutable notebook versions and datasets for reproducible research.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Two choice sets share the field name "role": name each enum explicitly.
    "ENUM_NAME_OVERRIDES": {
        "MemberRoleEnum": "apps.projects.models.Role",
        "CourseRoleEnum": "apps.courses.models.CourseRole",
        "InputRoleEnum": ["notebook", "data"],
        "RecommendationEnum": "apps.review.models.Recommendation",
    },
    # `<id:…>` (apps.core.converters): an integer a BigAutoField can hold; beyond it, no URL matches.
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
}

# --- sign-in, sign-up, tokens (apps/accounts) ----------------------------------------------------
# Failed logins (form and auth/token/) counted per username and per address; at the limit both
# are refused (429) until the cool-off has passed since the last attempt. A success clears that
# username's failures from that address.
REPROLAB_LOGIN_FAILURE_LIMIT = env.int("REPROLAB_LOGIN_FAILURE_LIMIT", default=5)
REPROLAB_LOGIN_COOLOFF_MINUTES = env.int("REPROLAB_LOGIN_COOLOFF_MINUTES", default=15)
AXES_FAILURE_LIMIT = REPROLAB_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=REPROLAB_LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = False  # apps.accounts.lockout.reset_on_success resets the pair instead
AXES_CLIENT_IP_CALLABLE = "apps.accounts.lockout.client_address"  # X-Forwarded-For as DRF trusts it
AXES_LOCKOUT_CALLABLE = "apps.accounts.lockout.lockout_response"
AXES_DISABLE_ACCESS_LOG = True  # a lockout needs the failures only, not a log of every address
AXES_VERBOSE = False
# Tokens minted by POST /api/v1/auth/token/ (a password exchange) expire after this many days.
REPROLAB_LOGIN_TOKEN_DAYS = env.int("REPROLAB_LOGIN_TOKEN_DAYS", default=30)
# Sign-up attempts (form posts) one address may make per hour.
REPROLAB_SIGNUPS_PER_HOUR = env.int("REPROLAB_SIGNUPS_PER_HOUR", default=10)

# --- ReproLab limits ----------------------------------------------------------------------------
REPROLAB_NOTEBOOK_MAX_BYTES = env.int("REPROLAB_NOTEBOOK_MAX_BYTES", default=25 * 1024 * 1024)
# One dataset upload (all its files together).
REPROLAB_DATASET_UPLOAD_MAX_BYTES = env.int("REPROLAB_DATASET_UPLOAD_MAX_BYTES", default=2 * 1024 * 1024 * 1024)
# Files in one dataset upload (Django's DATA_UPLOAD_MAX_NUMBER_FILES): more get 413.
REPROLAB_DATASET_MAX_FILES = env.int("REPROLAB_DATASET_MAX_FILES", default=100)
# Rendering runs in a child process killed after this many seconds (a pathological notebook
# must not hold a web worker), with this address-space cap.
REPROLAB_RENDER_TIMEOUT = env.float("REPROLAB_RENDER_TIMEOUT", default=20.0)
REPROLAB_RENDER_MEMORY_BYTES = env.int("REPROLAB_RENDER_MEMORY_BYTES", default=2 * 1024 * 1024 * 1024)
# Render new notebook versions in a Celery worker right after upload (needs a real worker).
REPROLAB_PRERENDER = env.bool("REPROLAB_PRERENDER", default=bool(REDIS_URL))
# Fresh renders (cache misses) one user or address may start per minute.
REPROLAB_RENDERS_PER_MINUTE = env.int("REPROLAB_RENDERS_PER_MINUTE", default=30)
# --- compute: the agent protocol ------------------------------------------------------------------
# A lease lasts this long unless renewed; agents heartbeat every REPROLAB_HEARTBEAT_SECONDS.
REPROLAB_LEASE_SECONDS = env.int("REPROLAB_LEASE_SECONDS", default=120)
REPROLAB_HEARTBEAT_SECONDS = env.int("REPROLAB_HEARTBEAT_SECONDS", default=20)
REPROLAB_MAX_ATTEMPTS = env.int("REPROLAB_MAX_ATTEMPTS", default=3)
# Shutdown releases a run may have without costing an attempt; later ones are charged like a
# failure of the node, so a node that claims and releases a run in a loop cannot keep it forever.
REPROLAB_MAX_FREE_RELEASES = env.int("REPROLAB_MAX_FREE_RELEASES", default=10)
# A node not heard from (claim polls, heartbeats) for this long is left out of scheduling: a dead
# node must not keep being assigned runs it will never claim. Polling agents check in every few s.
REPROLAB_NODE_ACTIVE_SECONDS = env.int("REPROLAB_NODE_ACTIVE_SECONDS", default=15)
REPROLAB_SCHEDULER = env.str("REPROLAB_SCHEDULER", default="load_balanced")
REPROLAB_CLAIM_MAX_WAIT_SECONDS = env.int("REPROLAB_CLAIM_MAX_WAIT_SECONDS", default=30)
REPROLAB_SWEEP_SECONDS = env.float("REPROLAB_SWEEP_SECONDS", default=15.0)
# How `make run`'s local node isolates runs (reprolab-agent --isolation): sandboxed = bwrap or uid.
REPROLAB_LOCAL_NODE_ISOLATION = env.str("REPROLAB_LOCAL_NODE_ISOLATION", default="sandboxed")
REPROLAB_OUTPUT_MAX_BYTES = env.int("REPROLAB_OUTPUT_MAX_BYTES", default=200 * 1024 * 1024)
# Files a notebook writes into its working directory, kept as the run's artifacts.
REPROLAB_ARTIFACT_MAX_BYTES = env.int("REPROLAB_ARTIFACT_MAX_BYTES", default=1024 * 1024 * 1024)
REPROLAB_ARTIFACTS_PER_RUN = env.int("REPROLAB_ARTIFACTS_PER_RUN", default=200)

# Declared environments (apps.environments): the site resolves declarations into locks with uv,
# for Linux and the oldest of these Pythons the declaration allows (the default first).
REPROLAB_PACKAGE_INDEX_URL = env.str("REPROLAB_PACKAGE_INDEX_URL", default="")  # "": uv's default (PyPI)
REPROLAB_ENVIRONMENT_PYTHON = env.str("REPROLAB_ENVIRONMENT_PYTHON", default="3.11")
REPROLAB_ENVIRONMENT_PYTHONS = env.list("REPROLAB_ENVIRONMENT_PYTHONS", default=["3.10", "3.11", "3.12", "3.13"])
REPROLAB_ENVIRONMENT_PLATFORM = env.str("REPROLAB_ENVIRONMENT_PLATFORM", default="linux")
REPROLAB_UV_CACHE_DIR = env.path("REPROLAB_UV_CACHE_DIR", default=str(VAR_DIR / "uv-cache"))
REPROLAB_RESOLVE_TIMEOUT = env.float("REPROLAB_RESOLVE_TIMEOUT", default=120.0)

# --- teaching (apps.courses) -------------------------------------------------------------------------
# Grading a submitted notebook on a node: each cell's limit (nbgrader's default), the whole run's.
REPROLAB_GRADING_CELL_TIMEOUT = env.int("REPROLAB_GRADING_CELL_TIMEOUT", default=30)
REPROLAB_GRADING_TIMEOUT = env.int("REPROLAB_GRADING_TIMEOUT", default=900)
CELERY_BEAT_SCHEDULE = {
    "sweep-expired-leases": {"task": "compute.sweep_expired_leases", "schedule": REPROLAB_SWEEP_SECONDS},
    "settle-reproductions": {"task": "reproducibility.settle_pending", "schedule": REPROLAB_SWEEP_SECONDS},
    "build-missing-reports": {"task": "reproducibility.build_missing_reports", "schedule": REPROLAB_SWEEP_SECONDS},
    "resend-notification-emails": {"task": "review.send_pending_emails", "schedule": 60.0},
    "reconcile-grading": {"task": "courses.reconcile_grading", "schedule": REPROLAB_SWEEP_SECONDS},
}

# --- notifications ------------------------------------------------------------------------------
# Absolute links in e-mails (requests are not at hand in Celery).
REPROLAB_SITE_URL = env.str("REPROLAB_SITE_URL", default="http://127.0.0.1:8000")
# EMAIL_URL configures SMTP in production (smtp+tls://user:password@host:587); the console by default.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default=vars()["EMAIL_BACKEND"])  # e.g. the file backend in tests
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="ReproLab <noreply@reprolab.invalid>")
# Only the embedded mode may create the well-known demo account.
REPROLAB_DEMO_ALLOWED = False

DATA_UPLOAD_MAX_NUMBER_FILES = REPROLAB_DATASET_MAX_FILES
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440  # larger uploads spool to disk and are hashed in chunks

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
# A strict Content-Security-Policy on every site page (django-csp): scripts and styles only from
# our own static files (no inline script, no on* attributes, no style attributes), no plugins,
# forms only to us, never framed. `data:` images are for Swagger UI's icons. The notebook render
# documents and the lineage picture send their own, stricter policy, which the middleware keeps.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],  # REST and the WebSockets of this host (CSP3 'self' covers ws:/wss:)
        "frame-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"require_debug_false": {"()": "django.utils.log.RequireDebugFalse"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "mail_admins": {
            "level": "ERROR",
            "filters": ["require_debug_false"],
            "class": "django.utils.log.AdminEmailHandler",
        },
    },
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    # Django's defaults give the "django" logger a console handler of its own (active under
    # DEBUG), and its records propagate to root's as well: every access line of daphne's
    # runserver ("django.channels.server") and every request warning was written twice. Root's
    # console is the one handler; the "django" logger keeps only Django's e-mail to ADMINS.
    "loggers": {"django": {"handlers": ["mail_admins"], "level": "INFO", "propagate": True}},
}
