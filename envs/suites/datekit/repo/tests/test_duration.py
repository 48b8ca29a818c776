from datetime import date, datetime, timedelta

import pytest

from datekit import DateParseError, Duration, format_duration, parse_duration, shift


def test_full_duration():
    assert parse_duration("P1Y2M3DT4H5M6S") == Duration(years=1, months=2, days=3, hours=4, minutes=5, seconds=6)


def test_month_and_minute_are_told_apart_by_T():
    assert parse_duration("P5M") == Duration(months=5)
    assert parse_duration("PT5M") == Duration(minutes=5)


def test_fractional_seconds():
    assert parse_duration("PT0.5S") == Duration(seconds=0.5)


@pytest.mark.parametrize("text", ["P", "PT", "P1DT", "1D", "P1H", "PT1D", ""])
def test_malformed_durations(text):
    with pytest.raises(DateParseError):
        parse_duration(text)


def test_to_timedelta():
    assert parse_duration("P1DT12H").to_timedelta() == timedelta(days=1, hours=12)


def test_to_timedelta_refuses_months():
    with pytest.raises(ValueError, match="no fixed length"):
        parse_duration("P1M").to_timedelta()


def test_negative_components_rejected():
    with pytest.raises(ValueError, match="days"):
        Duration(days=-1)


def test_format_duration():
    assert format_duration(Duration(years=1, days=2, minutes=30)) == "P1Y2DT30M"
    assert format_duration(Duration(seconds=1.25)) == "PT1.25S"
    assert format_duration(Duration()) == "PT0S"


def test_format_timedelta():
    assert format_duration(timedelta(days=2, hours=3, seconds=4)) == "P2DT3H4S"


def test_round_trip():
    for text in ("P1Y2M10DT2H30M", "P3W", "PT36H", "PT0.25S"):
        assert format_duration(parse_duration(text)) == text


def test_shift_date_by_days_and_months():
    assert shift(date(2024, 3, 15), parse_duration("P1M10D")) == date(2024, 4, 25)
    assert shift(date(2024, 3, 15), parse_duration("P1Y"), sign=-1) == date(2023, 3, 15)


def test_shift_datetime_by_hours():
    assert shift(datetime(2024, 3, 15, 22), parse_duration("PT3H")) == datetime(2024, 3, 16, 1)


def test_shift_date_by_hours_is_an_error():
    with pytest.raises(ValueError, match="hours"):
        shift(date(2024, 3, 15), Duration(hours=2))
