import pytest

from semvertools import InvalidRange, Range, satisfies, valid_range


@pytest.mark.parametrize(
    "version,rng",
    [
        ("1.2.3", "1.2.3"),
        ("1.2.3", "=1.2.3"),
        ("1.5.0", ">=1.2.3"),
        ("1.2.2", "<1.2.3"),
        ("1.9.9", "1.x"),
        ("1.2.9", "1.2.*"),
        ("5.0.0", "*"),
        ("1.0.0", ">=1.0.0 <2.0.0"),
        ("3.1.0", "1.x || >=3"),
    ],
)
def test_satisfied(version, rng):
    assert satisfies(version, rng)


@pytest.mark.parametrize(
    "version,rng",
    [
        ("1.2.4", "1.2.3"),
        ("1.2.2", ">=1.2.3"),
        ("2.0.0", "1.x"),
        ("2.0.0", ">=1.0.0 <2.0.0"),
        ("2.5.0", "1.x || >=3"),
    ],
)
def test_not_satisfied(version, rng):
    assert not satisfies(version, rng)


def test_greater_than_partial_skips_whole_partial():
    assert not satisfies("1.2.9", ">1.2")
    assert satisfies("1.3.0", ">1.2")


def test_less_equal_partial_includes_whole_partial():
    assert satisfies("1.2.9", "<=1.2")
    assert not satisfies("1.3.0", "<=1.2")


def test_caret_major():
    assert satisfies("1.9.0", "^1.2.3")
    assert not satisfies("2.0.0", "^1.2.3")
    assert not satisfies("1.2.2", "^1.2.3")


def test_caret_zero_major():
    assert satisfies("0.2.9", "^0.2.3")
    assert not satisfies("0.3.0", "^0.2.3")


def test_caret_zero_zero():
    assert satisfies("0.0.3", "^0.0.3")
    assert not satisfies("0.0.4", "^0.0.3")


def test_tilde_with_minor():
    assert satisfies("1.2.9", "~1.2.3")
    assert not satisfies("1.3.0", "~1.2.3")


def test_tilde_major_only():
    assert satisfies("1.9.0", "~1")
    assert not satisfies("2.0.0", "~1")


def test_hyphen_range_full():
    assert satisfies("2.3.4", "1.2.3 - 2.3.4")
    assert not satisfies("2.3.5", "1.2.3 - 2.3.4")


def test_operator_with_space():
    assert satisfies("1.5.0", ">= 1.2 < 2")


def test_prerelease_excluded_by_default():
    assert not satisfies("1.3.0-alpha", "^1.2.3")


def test_prerelease_allowed_when_range_names_same_release():
    assert satisfies("1.2.3-beta.3", ">=1.2.3-beta.2 <1.3.0")
    assert not satisfies("1.2.4-beta.3", ">=1.2.3-beta.2 <1.3.0")


def test_contains_operator():
    assert "1.4.0" in Range("^1.0")


def test_str_of_range_shows_comparators():
    assert str(Range("~1.2")) == ">=1.2.0 <1.3.0"


@pytest.mark.parametrize("text", ["1.2.3 -", "^a.b", ">=1.2.3-alpha..1", "1 - 2 - 3"])
def test_invalid_ranges(text):
    assert not valid_range(text)
    with pytest.raises((InvalidRange, ValueError)):
        Range(text)
