from datetime import date, datetime

import pytest

from datekit import DateParseError, parse_relative

FRIDAY = date(2024, 3, 15)


def test_named_days():
    assert parse_relative("today", FRIDAY) == FRIDAY
    assert parse_relative("Yesterday", FRIDAY) == date(2024, 3, 14)
    assert parse_relative("tomorrow", FRIDAY) == date(2024, 3, 16)


def test_days_ago_and_in_weeks():
    assert parse_relative("3 days ago", FRIDAY) == date(2024, 3, 12)
    assert parse_relative("in 2 weeks", FRIDAY) == date(2024, 3, 29)


def test_number_words_and_articles():
    assert parse_relative("a week ago", FRIDAY) == date(2024, 3, 8)
    assert parse_relative("in  three   months", FRIDAY) == date(2024, 6, 15)


def test_hours_need_a_datetime():
    assert parse_relative("2 hours ago", datetime(2024, 3, 15, 1)) == datetime(2024, 3, 14, 23)
    with pytest.raises(DateParseError, match="hours"):
        parse_relative("2 hours ago", FRIDAY)


def test_next_and_last_weekday():
    assert parse_relative("next monday", FRIDAY) == date(2024, 3, 18)
    assert parse_relative("last monday", FRIDAY) == date(2024, 3, 11)
    assert parse_relative("last friday", FRIDAY) == date(2024, 3, 8)


def test_this_weekday_stays_in_the_week():
    assert parse_relative("this wednesday", FRIDAY) == date(2024, 3, 13)
    assert parse_relative("this sunday", FRIDAY) == date(2024, 3, 17)


def test_both_in_and_ago_is_an_error():
    with pytest.raises(DateParseError, match="either"):
        parse_relative("in 3 days ago", FRIDAY)


def test_falls_back_to_iso():
    assert parse_relative("2024-01-02", FRIDAY) == date(2024, 1, 2)


def test_unknown_phrase():
    with pytest.raises(DateParseError, match="fortnight"):
        parse_relative("a fortnight hence", FRIDAY)
