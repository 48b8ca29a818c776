import pytest

from spanset import Interval, InvalidInterval, as_interval


def test_length():
    assert Interval(2, 5).length == 3


def test_empty():
    assert Interval(3, 3).is_empty
    assert not Interval(3, 4).is_empty


def test_backwards_rejected():
    with pytest.raises(InvalidInterval, match="before start"):
        Interval(5, 2)


def test_incomparable_bounds_rejected():
    with pytest.raises(InvalidInterval, match="not comparable"):
        Interval(1, "x")


def test_contains_point_half_open():
    iv = Interval(1, 5)
    assert iv.contains_point(1)
    assert iv.contains_point(4.5)
    assert not iv.contains_point(5)
    assert not iv.contains_point(0)


def test_contains_interval():
    assert Interval(0, 10).contains(Interval(2, 10))
    assert not Interval(0, 10).contains(Interval(5, 11))


def test_overlaps():
    assert Interval(0, 5).overlaps(Interval(4, 8))
    assert Interval(4, 8).overlaps(Interval(0, 5))
    assert Interval(0, 10).overlaps(Interval(3, 4))


def test_touching_intervals_do_not_overlap():
    assert not Interval(1, 3).overlaps(Interval(3, 5))
    assert Interval(1, 3).touches(Interval(3, 5))


def test_intersection():
    assert Interval(0, 5).intersection(Interval(3, 8)) == Interval(3, 5)
    assert Interval(0, 5).intersection(Interval(5, 8)) is None


def test_subtract_end_piece():
    assert Interval(0, 10).subtract(Interval(5, 20)) == [Interval(0, 5)]


def test_subtract_disjoint():
    assert Interval(0, 10).subtract(Interval(20, 30)) == [Interval(0, 10)]


def test_ordering_and_str():
    assert sorted([Interval(2, 3), Interval(1, 9), Interval(1, 2)]) == [Interval(1, 2), Interval(1, 9), Interval(2, 3)]
    assert str(Interval(1, 2)) == "[1, 2)"


def test_as_interval():
    assert as_interval((1, 2)) == Interval(1, 2)
    with pytest.raises(InvalidInterval, match="pair"):
        as_interval(5)


def test_float_bounds():
    assert Interval(0.5, 1.5).length == 1.0
