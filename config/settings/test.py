"""Settings for the test suite. PostgreSQL and Redis come in through DATABASE_URL / REDIS_URL."""

import os

from .base import *  # noqa: F403
from .base import CACHES, DATABASES, VAR_DIR, env

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
# Runs of the suite may share one Redis: keep their cache keys apart (servers a test starts inherit it).
CACHES["default"]["KEY_PREFIX"] = env.str("REPROLAB_TEST_RUN_ID", default=str(os.getpid()))
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"auth_token": "1000/minute"}}
REPROLAB_DEMO_ALLOWED = True
REPROLAB_PRERENDER = env.bool("REPROLAB_PRERENDER", default=False)  # integration tests turn it on
WHITENOISE_AUTOREFRESH = True  # serve static files from the app folders; no collectstatic in tests
WHITENOISE_USE_FINDERS = True  # (autorefresh alone only rescans STATIC_ROOT, which tests never fill)
