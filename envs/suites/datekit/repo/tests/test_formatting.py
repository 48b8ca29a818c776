from datetime import date, datetime, time, timedelta, timezone

import pytest

from datekit import format_date, format_iso, format_offset, humanize, parse_datetime


def test_format_iso_date_time_datetime():
    assert format_iso(date(2024, 3, 5)) == "2024-03-05"
    assert format_iso(time(7, 5, 9)) == "07:05:09"
    assert format_iso(datetime(2024, 3, 5, 7, 5, 9)) == "2024-03-05T07:05:09"


def test_format_iso_utc_and_offset():
    assert format_iso(datetime(2024, 3, 5, 12, tzinfo=timezone.utc)) == "2024-03-05T12:00:00Z"
    east = timezone(timedelta(hours=5, minutes=30))
    assert format_iso(datetime(2024, 3, 5, 12, tzinfo=east)) == "2024-03-05T12:00:00+05:30"


def test_format_offset_whole_hours():
    assert format_offset(timedelta(hours=-5)) == "-05:00"
    assert format_offset(None) == ""


def test_iso_round_trip_whole_seconds():
    text = "2024-12-31T23:59:59+01:00"
    assert format_iso(parse_datetime(text)) == text


def test_format_date_tokens():
    value = datetime(2024, 3, 5, 14, 7, 9)
    assert format_date(value, "YYYY-MM-DD HH:mm:ss") == "2024-03-05 14:07:09"
    assert format_date(value, "dddd D MMMM YY") == "Tuesday 5 March 24"
    assert format_date(value, "ddd, D MMM") == "Tue, 5 Mar"


def test_format_date_twelve_hour_clock_afternoon():
    assert format_date(datetime(2024, 3, 5, 14, 7), "hh:mm A") == "02:07 PM"


def test_format_date_literal_text():
    assert format_date(date(2024, 3, 5), "[Day] D [of] MMMM") == "Day 5 of March"


def test_time_token_on_date_is_an_error():
    with pytest.raises(ValueError, match="'HH' needs a datetime"):
        format_date(date(2024, 3, 5), "HH")


def test_humanize_past_and_future():
    assert humanize(timedelta(days=-3)) == "3 days ago"
    assert humanize(timedelta(hours=2, minutes=10)) == "in 2 hours"
    assert humanize(timedelta(seconds=-10)) == "just now"
    assert humanize(timedelta(seconds=50)) == "in 1 minute"


def test_humanize_large_units():
    assert humanize(timedelta(days=-400)) == "1 year ago"
    assert humanize(timedelta(days=65)) == "in 2 months"
