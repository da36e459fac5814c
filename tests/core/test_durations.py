"""The `elapsed` filter (durations and ages, seconds below a minute) and `as_datetime` (ISO
strings stored in JSON, formatted like every other date)."""

import datetime as dt

import pytest
from django.template import Context, Template

from apps.core.templatetags import durations
from apps.core.templatetags.durations import as_datetime, elapsed

START = dt.datetime(2026, 12, 1, 8, 30, 19, 450296, tzinfo=dt.UTC)


def after(seconds: float) -> dt.datetime:
    return START + dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(3, "3 seconds"), (1, "1 second"), (59.9, "59 seconds"), (0.2, "less than a second")],
)
def test_a_duration_below_a_minute_is_shown_in_seconds(seconds, shown):
    assert elapsed(START, after(seconds)) == shown


@pytest.mark.parametrize(("seconds", "shown"), [(60, "1\xa0minute"), (3725, "1\xa0hour, 2\xa0minutes")])
def test_a_duration_of_a_minute_or_more_reads_as_timesince(seconds, shown):
    assert elapsed(START, after(seconds)) == shown


def test_without_an_end_it_is_the_age_until_now(monkeypatch):
    monkeypatch.setattr(durations.timezone, "now", lambda: after(5))

    assert elapsed(START) == "5 seconds"


def test_iso_strings_are_accepted_like_datetimes():
    assert elapsed(START.isoformat(), after(3).isoformat()) == "3 seconds"


@pytest.mark.parametrize("value", [None, "", "yesterday", "2026-13-01T00:00:00+00:00", 17])
def test_what_is_not_a_time_shows_nothing(value):
    assert elapsed(value, after(3)) == ""
    assert as_datetime(value) is None


def test_an_iso_timestamp_is_formatted_like_the_rest_of_the_site():
    rendered = Template('{% load durations %}{{ value|as_datetime|date:"Y-m-d H:i:s" }} UTC').render(
        Context({"value": "2026-12-01T08:30:19.450296+00:00"})
    )

    assert rendered == "2026-12-01 08:30:19 UTC"


def test_template_shows_seconds_for_a_three_second_run():
    rendered = Template("{% load durations %}{{ start|elapsed:end }}").render(
        Context({"start": START, "end": after(3)})
    )

    assert rendered == "3 seconds"
