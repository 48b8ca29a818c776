import pytest

from spanset import Entry, Interval, IntervalTree


def build():
    return IntervalTree([(0, 10, "a"), (5, 15, "b"), (20, 30, "c")])


def names(entries):
    return [e.data for e in entries]


def test_len_and_iteration_sorted():
    tree = IntervalTree([(20, 30), (0, 10), (5, 15)])
    assert len(tree) == 3
    assert [e.interval for e in tree] == [Interval(0, 10), Interval(5, 15), Interval(20, 30)]


def test_point_query():
    assert names(build().at(7)) == ["a", "b"]
    assert names(build().at(10)) == ["b"]
    assert build().at(17) == []


def test_overlap_query():
    assert names(build().overlap(9, 21)) == ["a", "b", "c"]
    assert names(build().overlap(15, 20)) == []


def test_overlap_accepts_interval():
    assert names(build().overlap(Interval(25, 26))) == ["c"]


def test_envelop():
    assert names(build().envelop(0, 16)) == ["a", "b"]


def test_add_returns_entry_and_accepts_interval():
    tree = IntervalTree()
    entry = tree.add(Interval(1, 2), "x")
    assert entry == Entry(Interval(1, 2), "x")
    assert list(tree) == [entry]


def test_remove():
    tree = build()
    tree.remove(5, 15, "b")
    assert names(tree) == ["a", "c"]
    assert len(tree) == 2


def test_remove_missing_raises():
    with pytest.raises(KeyError):
        build().remove(1, 2)


def test_discard():
    tree = build()
    assert tree.discard(0, 10, "a") is True
    assert tree.discard(0, 10, "a") is False


def test_duplicate_intervals_with_different_data():
    tree = IntervalTree([(1, 5, "x"), (1, 5, "y")])
    assert names(tree.at(2)) == ["x", "y"]
    tree.remove(1, 5, "y")
    assert names(tree) == ["x"]


def test_contains_interval():
    assert (5, 15) in build()
    assert (5, 16) not in build()


def test_span():
    assert build().span() == Interval(0, 30)
    assert IntervalTree().span() is None


def test_merged():
    assert build().merged() == [Interval(0, 15), Interval(20, 30)]


def test_clear_and_bool():
    tree = build()
    tree.clear()
    assert not tree and len(tree) == 0


def test_tree_stays_balanced():
    tree = IntervalTree((i, i + 1) for i in range(1000))
    assert tree.height() <= 15


def _brute_force(entries, query):
    return sorted((e for e in entries if e.overlaps(query)), key=lambda iv: (iv.start, iv.end))


def test_queries_match_brute_force_after_adds_and_removes():
    # A fixed, arithmetic sequence of intervals: deterministic and varied.
    intervals = [Interval((i * 37) % 101, (i * 37) % 101 + 1 + (i * 13) % 17) for i in range(120)]
    tree = IntervalTree(intervals)
    for iv in intervals[::3]:
        tree.remove(iv)
    live = [iv for i, iv in enumerate(intervals) if i % 3]
    for q in range(0, 120, 7):
        query = Interval(q, q + 5)
        assert [e.interval for e in tree.overlap(query)] == _brute_force(live, query)
    assert len(tree) == len(live)
