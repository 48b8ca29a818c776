from linediff import Opcode, matches, opcodes, similarity


def test_equal_sequences():
    assert opcodes(["a", "b"], ["a", "b"]) == [Opcode("equal", 0, 2, 0, 2)]


def test_both_empty():
    assert opcodes([], []) == []


def test_insert_into_empty():
    assert opcodes([], ["a", "b"]) == [Opcode("insert", 0, 0, 0, 2)]


def test_delete_everything():
    assert opcodes(["a", "b"], []) == [Opcode("delete", 0, 2, 0, 0)]


def test_replace_in_the_middle():
    assert opcodes(list("abcd"), list("axyd")) == [
        Opcode("equal", 0, 1, 0, 1),
        Opcode("replace", 1, 3, 1, 3),
        Opcode("equal", 3, 4, 3, 4),
    ]


def test_insert_and_delete():
    codes = opcodes(list("abcde"), list("acdXe"))
    assert [c.tag for c in codes] == ["equal", "delete", "equal", "insert", "equal"]


def test_matches_are_a_longest_common_subsequence():
    a, b = list("ABCABBA"), list("CBABAC")
    pairs = matches(a, b)
    assert len(pairs) == 4  # the LCS length from Myers' paper
    assert all(a[i] == b[j] for i, j in pairs)
    assert pairs == sorted(pairs)


def test_opcodes_cover_both_sequences():
    a, b = list("the quick brown fox"), list("the quack brown box!")
    codes = opcodes(a, b)
    assert codes[0].i1 == 0 and codes[0].j1 == 0
    assert codes[-1].i2 == len(a) and codes[-1].j2 == len(b)
    for left, right in zip(codes, codes[1:]):
        assert (left.i2, left.j2) == (right.i1, right.j1)


def test_similarity_bounds():
    assert similarity([], []) == 1.0
    assert similarity(["a"], ["b"]) == 0.0
