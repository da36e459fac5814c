"""The embedded mode behind `make run`: SQLite, in-process channel layer, no Redis, demo data."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
REPROLAB_DEMO_ALLOWED = True
