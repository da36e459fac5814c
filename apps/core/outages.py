"""Log an outage of a best-effort dependency once when it starts and once when it ends.

A busy site fails hundreds of broadcasts and enqueues during a 30 s Redis outage; a traceback
for each buries everything else in the log. Instead the first failure logs one warning (the
error, and what is lost meanwhile), later ones log at debug level, and the first success after
them logs that the dependency is back, with how long and how many failures it cost.

State is process-local (every process notices its own outage) and guarded by a lock: failures
arrive from request threads, Celery threads and event loops at once.
"""

import logging
import threading
import time

logger = logging.getLogger(__name__)


class Outage:
    def __init__(self, name: str, *, consequence: str) -> None:
        self.name = name
        self.consequence = consequence
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, error: BaseException, *, action: str) -> None:
        """Record a failed use of the dependency (`action` says what was attempted)."""
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
            self._failures += 1
        if first:
            logger.warning(
                "%s unavailable (%s: %s) while trying to %s; %s. Logged once until it is back.",
                self.name.capitalize(),
                type(error).__name__,
                error,
                action,
                self.consequence,
            )
        else:
            logger.debug("%s still unavailable; could not %s", self.name, action, exc_info=error)

    def reset(self) -> None:
        """Forget any outage, silently (tests start from a known state)."""
        with self._lock:
            self._down_since = None
            self._failures = 0

    def succeeded(self) -> None:
        """Record a successful use; logs the end of an outage if there was one."""
        if self._down_since is None:  # the common case, without taking the lock
            return
        with self._lock:
            if self._down_since is None:
                return
            seconds = time.monotonic() - self._down_since
            failures = self._failures
            self._down_since = None
            self._failures = 0
        logger.warning("%s back after %.1f s (%d failed attempts meanwhile)", self.name.capitalize(), seconds, failures)


# Live events are notifications only: the database is the record, clients resync over REST.
CHANNEL_LAYER = Outage(
    "channel layer", consequence="live events are not delivered meanwhile (clients resync over REST)"
)
# The database is the record: beat reconcilers (reports, reproductions, e-mails) and first views
# (renders) find the work a lost task would have done.
BROKER = Outage("Celery broker", consequence="background tasks are not queued meanwhile (reconcilers catch up later)")
DATABASE = Outage("database", consequence="requests that need it answer 503 meanwhile")
