from spanset import Interval, merge_intervals


def test_merge_overlapping():
    assert merge_intervals([(1, 4), (2, 6), (8, 9)]) == [Interval(1, 6), Interval(8, 9)]


def test_merge_unsorted_input():
    assert merge_intervals([(8, 9), (1, 3), (2, 4)]) == [Interval(1, 4), Interval(8, 9)]


def test_merge_adjacent_by_default():
    assert merge_intervals([(1, 3), (3, 5)]) == [Interval(1, 5)]


def test_keep_adjacent_separate():
    assert merge_intervals([(1, 3), (3, 5)], merge_adjacent=False) == [Interval(1, 3), Interval(3, 5)]


def test_merge_empty_input():
    assert merge_intervals([]) == []
