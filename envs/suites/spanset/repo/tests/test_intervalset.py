from spanset import Interval, IntervalSet


def test_constructor_normalizes():
    s = IntervalSet([(5, 7), (1, 3), (2, 4), (7, 8)])
    assert list(s) == [Interval(1, 4), Interval(5, 8)]


def test_contains_point():
    s = IntervalSet([(1, 3), (5, 8)])
    assert 1 in s and 2.5 in s and 5 in s
    assert 3 not in s and 4 not in s and 8 not in s and 0 not in s


def test_add_merges_and_bridges():
    s = IntervalSet([(1, 3), (5, 8)])
    s.add((3, 5))
    assert list(s) == [Interval(1, 8)]


def test_remove_from_end():
    s = IntervalSet([(0, 10)])
    s.remove((5, 20))
    assert list(s) == [Interval(0, 5)]


def test_remove_whole_intervals():
    s = IntervalSet([(0, 2), (4, 6), (8, 10)])
    s.remove((3, 7))
    assert list(s) == [Interval(0, 2), Interval(8, 10)]


def test_union():
    assert IntervalSet([(0, 2)]) | IntervalSet([(1, 5)]) == IntervalSet([(0, 5)])


def test_intersection():
    a = IntervalSet([(0, 5), (10, 15)])
    b = IntervalSet([(3, 12)])
    assert list(a & b) == [Interval(3, 5), Interval(10, 12)]


def test_difference():
    a = IntervalSet([(0, 10)])
    b = IntervalSet([(2, 3), (8, 12)])
    assert list(a - b) == [Interval(0, 2), Interval(3, 8)]


def test_complement():
    s = IntervalSet([(2, 4), (6, 8)])
    assert list(s.complement((0, 10))) == [Interval(0, 2), Interval(4, 6), Interval(8, 10)]


def test_total_length_and_len():
    s = IntervalSet([(0, 2), (5, 10)])
    assert s.total_length == 7
    assert len(s) == 2


def test_span():
    assert IntervalSet([(2, 4), (6, 9)]).span() == Interval(2, 9)
    assert IntervalSet().span() is None


def test_covers():
    s = IntervalSet([(0, 5), (6, 9)])
    assert s.covers((1, 4))
    assert not s.covers((4, 7))


def test_repr_and_equality():
    assert repr(IntervalSet([(1, 2)])) == "IntervalSet([[1, 2)])"
    assert IntervalSet([(1, 2), (2, 3)]) == IntervalSet([(1, 3)])
