"""Sign-up rate per address: a fixed one-hour window counted in the cache (shared through Redis
in production, so every web process sees the same count)."""

import time

from django.conf import settings
from django.core.cache import cache

WINDOW_SECONDS = 3600


def signup_slot_take(*, address: str | None) -> bool:
    """Count one sign-up attempt from `address`; False once past REPROLAB_SIGNUPS_PER_HOUR."""
    key = f"signup-rate:{address or 'unknown'}:{int(time.time() // WINDOW_SECONDS)}"
    cache.add(key, 0, timeout=WINDOW_SECONDS * 2)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=WINDOW_SECONDS * 2)
        count = 1
    return count <= settings.REPROLAB_SIGNUPS_PER_HOUR


def signup_retry_after() -> int:
    """Seconds until the current window ends."""
    return WINDOW_SECONDS - int(time.time()) % WINDOW_SECONDS
