import pytest

from semvertools import InvalidVersion, Version, compare, parse


def test_parse_plain():
    v = parse("1.2.3")
    assert (v.major, v.minor, v.patch) == (1, 2, 3)
    assert v.prerelease == () and v.build == ()


def test_parse_prerelease_and_build():
    v = parse("1.0.0-alpha.1+build.5")
    assert v.prerelease == ("alpha", 1)
    assert v.build == ("build", "5")


def test_parse_accepts_v_prefix_and_spaces():
    assert parse(" v2.0.1 ") == Version(2, 0, 1)


@pytest.mark.parametrize("text", ["1.2", "1.2.3.4", "a.b.c", "1.2.3-", "1.2.3+", "1.2.3-alpha..1", "", "1.2.-3"])
def test_parse_rejects_invalid(text):
    with pytest.raises(InvalidVersion):
        parse(text)


def test_parse_rejects_leading_zero_in_prerelease_number():
    with pytest.raises(InvalidVersion):
        parse("1.0.0-alpha.01")


def test_str_round_trip():
    for text in ["0.0.0", "1.2.3", "1.2.3-rc.1", "1.2.3+exp.sha.5114f85", "1.0.0-x.7.z.92+b1"]:
        assert str(parse(text)) == text


def test_repr():
    assert repr(parse("1.2.3-rc.1")) == "Version('1.2.3-rc.1')"


def test_constructor_rejects_negative():
    with pytest.raises(InvalidVersion):
        Version(1, -1, 0)


def test_simple_ordering():
    assert parse("1.0.0") < parse("2.0.0") < parse("2.1.0") < parse("2.1.1")


def test_prerelease_sorts_before_release():
    assert parse("1.0.0-alpha") < parse("1.0.0")


def test_compare_returns_sign():
    assert compare("1.0.0", "1.0.1") == -1
    assert compare("1.0.1", "1.0.0") == 1
    assert compare("1.0.0", "1.0.0") == 0


def test_build_metadata_ignored_for_equality():
    assert parse("1.0.0+a") == parse("1.0.0+b")
    assert hash(parse("1.0.0+a")) == hash(parse("1.0.0"))


def test_is_prerelease_and_release():
    v = parse("3.4.5-beta")
    assert v.is_prerelease
    assert v.release == (3, 4, 5)
    assert not parse("3.4.5").is_prerelease


def test_bump_major():
    assert parse("1.2.3").bump_major() == Version(2, 0, 0)


def test_bump_patch_of_release():
    assert parse("1.2.3").bump_patch() == Version(1, 2, 4)


def test_bump_patch_of_prerelease_releases_it():
    assert str(parse("1.2.3-rc.2").bump_patch()) == "1.2.3"


def test_bump_prerelease_from_release():
    assert str(parse("1.2.3").bump_prerelease()) == "1.2.4-rc.1"


def test_bump_prerelease_increments_number():
    assert str(parse("1.2.4-rc.1").bump_prerelease()) == "1.2.4-rc.2"


def test_versions_are_hashable_in_sets():
    assert len({parse("1.0.0"), parse("1.0.0"), parse("1.0.1")}) == 2
