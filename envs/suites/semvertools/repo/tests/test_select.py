from semvertools import latest, max_satisfying, min_satisfying, sort_versions

VERSIONS = ["1.0.0", "1.2.0", "1.2.5", "1.10.0", "2.0.0-rc.1", "2.0.0", "2.1.3", "0.9.0"]


def test_sort_versions():
    assert [str(v) for v in sort_versions(["1.10.0", "1.2.0", "1.9.0"])] == ["1.2.0", "1.9.0", "1.10.0"]


def test_sort_versions_reverse():
    assert str(sort_versions(VERSIONS, reverse=True)[0]) == "2.1.3"


def test_max_satisfying_caret():
    assert str(max_satisfying(VERSIONS, "^1.0.0")) == "1.10.0"


def test_min_satisfying():
    assert str(min_satisfying(VERSIONS, ">=1.1")) == "1.2.0"


def test_max_satisfying_none():
    assert max_satisfying(VERSIONS, ">=3") is None


def test_latest_skips_prereleases():
    assert str(latest(["1.0.0", "1.1.0-rc.1"])) == "1.0.0"


def test_latest_with_prereleases():
    assert str(latest(["1.0.0", "1.1.0-rc.1"], include_prerelease=True)) == "1.1.0-rc.1"
