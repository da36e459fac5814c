"""Settings for the test suite. PostgreSQL and Redis come in through DATABASE_URL / REDIS_URL."""

import os

from .base import *  # noqa: F403
from .base import CACHES, CHANNEL_LAYERS, DATABASES, VAR_DIR, env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; tests only
MEDIA_ROOT = env.path("DJANGO_MEDIA_ROOT", default=str(VAR_DIR / "test-media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# A file, not memory, so that a server started by a test (daphne, celery) sees the same SQLite
# database when PostgreSQL is not available.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
# Runs of the suite may share one Redis: keep their cache keys, Celery queue and channel-layer
# groups apart (the servers and workers a test starts inherit the run id), so a worker of one
# run never takes a task of another's (whose database it cannot see).
RUN_ID = env.str("REPROLAB_TEST_RUN_ID", default=str(os.getpid()))
CACHES["default"]["KEY_PREFIX"] = RUN_ID
CELERY_TASK_DEFAULT_QUEUE = f"reprolab-test-{RUN_ID}"
if "CONFIG" in CHANNEL_LAYERS["default"]:
    CHANNEL_LAYERS["default"] = {
        **CHANNEL_LAYERS["default"],
        "CONFIG": {**CHANNEL_LAYERS["default"]["CONFIG"], "prefix": f"asgi-test-{RUN_ID}"},  # type: ignore[dict-item]
    }
# Axes is off for the suite (Django's client.login() passes no request, which axes refuses, and
# no test should be locked out by another's failures); tests/accounts turn it on to test it.
AXES_ENABLED = False
# Every test client signs up from 127.0.0.1 and the cache (Redis) outlives a test: tests/accounts
# lowers this to test the limit.
REPROLAB_SIGNUPS_PER_HOUR = 100_000
REPROLAB_DEMO_ALLOWED = True
REPROLAB_PRERENDER = env.bool("REPROLAB_PRERENDER", default=False)  # integration tests turn it on
WHITENOISE_AUTOREFRESH = True  # serve static files from the app folders; no collectstatic in tests
WHITENOISE_USE_FINDERS = True  # (autorefresh alone only rescans STATIC_ROOT, which tests never fill)
