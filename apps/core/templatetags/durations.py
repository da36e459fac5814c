"""Durations and timestamps as the site shows them.

`{{ start|elapsed:end }}` is how long from start to end (to now without an end): seconds below a
minute ("3 seconds"), Django's `timesince` above ("2 minutes", "1 hour, 5 minutes"), which alone
says "0 minutes" for a 3-second run. `{{ node.last_seen_at|elapsed }} ago` reads the same way.

`{{ value|as_datetime|date:"Y-m-d H:i:s" }}` turns the ISO 8601 strings stored in JSON (reports)
back into datetimes, so they are formatted like every other date on the site.
"""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.timesince import timesince

register = template.Library()


def _as_datetime(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return parse_datetime(value.strip())
        except ValueError:  # well-formed but impossible, e.g. month 13
            return None
    return None


@register.filter
def elapsed(start: object, end: object = None) -> str:
    """How long from `start` to `end` (now when None); "" when `start` is not a datetime."""
    begin = _as_datetime(start)
    if begin is None:
        return ""
    finish = _as_datetime(end) or timezone.now()
    if timezone.is_naive(begin) != timezone.is_naive(finish):
        return ""
    seconds = (finish - begin).total_seconds()
    if seconds < 60:
        whole = max(0, int(seconds))
        return "less than a second" if seconds < 1 else f"{whole} second{'' if whole == 1 else 's'}"
    return timesince(begin, finish)


@register.filter
def as_datetime(value: object) -> dt.datetime | None:
    """An ISO 8601 string (or a datetime) as a datetime, for the `date` filter; None otherwise."""
    return _as_datetime(value)
