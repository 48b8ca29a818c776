from datetime import date, datetime, time, timedelta, timezone

import pytest

from datekit import DateParseError, parse_date, parse_datetime, parse_offset, parse_time


def test_calendar_date_extended_and_basic():
    assert parse_date("2024-03-15") == date(2024, 3, 15)
    assert parse_date("20240315") == date(2024, 3, 15)


def test_date_surrounding_whitespace_is_ignored():
    assert parse_date("  2024-03-15\n") == date(2024, 3, 15)


def test_ordinal_date():
    assert parse_date("2024-075") == date(2024, 3, 15)
    assert parse_date("2023365") == date(2023, 12, 31)


def test_ordinal_date_out_of_range():
    with pytest.raises(DateParseError, match="days 1..365"):
        parse_date("2023-366")


def test_week_date():
    assert parse_date("2024-W11-5") == date(2024, 3, 15)
    assert parse_date("2024W115") == date(2024, 3, 15)
    assert parse_date("2024-W11") == date(2024, 3, 11)


def test_week_out_of_range():
    with pytest.raises(DateParseError, match="weeks 1..52"):
        parse_date("2023-W53-1")


def test_month_date_means_first_day():
    assert parse_date("2024-03") == date(2024, 3, 1)


def test_invalid_calendar_date_names_the_text():
    with pytest.raises(DateParseError, match="2023-02-29"):
        parse_date("2023-02-29")


def test_garbage_date():
    with pytest.raises(DateParseError, match="not an ISO-8601 date"):
        parse_date("15/03/2024")


def test_times_with_and_without_seconds():
    assert parse_time("14:30") == time(14, 30)
    assert parse_time("14:30:15") == time(14, 30, 15)
    assert parse_time("143015") == time(14, 30, 15)
    assert parse_time("14") == time(14)


def test_time_fraction_with_many_digits_is_truncated():
    assert parse_time("10:00:00.1234567") == time(10, 0, 0, 123456)


def test_time_out_of_range():
    with pytest.raises(DateParseError, match="hour out of range"):
        parse_time("24:00")
    with pytest.raises(DateParseError, match="second out of range"):
        parse_time("23:59:60")


def test_offsets():
    assert parse_offset("Z") == timezone.utc
    assert parse_offset("+05:30").utcoffset(None) == timedelta(hours=5, minutes=30)
    assert parse_offset("-05").utcoffset(None) == timedelta(hours=-5)


def test_time_with_offset():
    value = parse_time("09:15:00+02:00")
    assert value.utcoffset() == timedelta(hours=2)


def test_datetime_separators():
    expected = datetime(2024, 3, 15, 9, 30)
    assert parse_datetime("2024-03-15T09:30") == expected
    assert parse_datetime("2024-03-15 09:30") == expected
    assert parse_datetime("20240315t0930") == expected


def test_datetime_without_time_is_midnight():
    assert parse_datetime("2024-03-15") == datetime(2024, 3, 15)


def test_datetime_utc():
    value = parse_datetime("2024-03-15T09:30:00Z")
    assert value == datetime(2024, 3, 15, 9, 30, tzinfo=timezone.utc)


def test_datetime_error_quotes_whole_text():
    with pytest.raises(DateParseError, match="2024-03-15T25:00"):
        parse_datetime("2024-03-15T25:00")
