from datetime import date, datetime

import pytest

from datekit import add_months, days_in_month, is_leap_year, iso_week_monday, iso_weeks_in_year


def test_leap_years_every_fourth_year():
    assert is_leap_year(2024)
    assert not is_leap_year(2023)


def test_century_is_not_leap():
    assert not is_leap_year(1900)


def test_days_in_month():
    assert [days_in_month(2023, m) for m in range(1, 13)] == [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    assert days_in_month(2024, 2) == 29


def test_days_in_month_rejects_bad_month():
    with pytest.raises(ValueError, match="month"):
        days_in_month(2024, 13)


def test_add_months_across_year_boundary():
    assert add_months(date(2023, 11, 15), 3) == date(2024, 2, 15)
    assert add_months(date(2024, 2, 15), -3) == date(2023, 11, 15)


def test_add_months_keeps_time_of_datetime():
    assert add_months(datetime(2024, 3, 10, 8, 30), 1) == datetime(2024, 4, 10, 8, 30)


def test_iso_week_monday_when_year_starts_on_monday():
    assert iso_week_monday(2024, 1) == date(2024, 1, 1)
    assert iso_week_monday(2024, 11) == date(2024, 3, 11)


def test_weeks_in_year():
    assert iso_weeks_in_year(2020) == 53
    assert iso_weeks_in_year(2023) == 52
