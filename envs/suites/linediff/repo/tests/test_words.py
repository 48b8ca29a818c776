from linediff import render_word_diff, tokenize, word_diff


def test_tokenize_words_spaces_punctuation():
    assert tokenize("Hello,  world!") == ["Hello", ",", "  ", "world", "!"]


def test_word_diff_segments():
    assert word_diff("the quick fox", "the slow fox") == [
        ("equal", "the "),
        ("delete", "quick"),
        ("insert", "slow"),
        ("equal", " fox"),
    ]


def test_render_replacement():
    assert render_word_diff("the quick fox", "the slow fox") == "the [-quick-]{+slow+} fox"


def test_render_pure_deletion():
    assert render_word_diff("a very big cat", "a big cat") == "a [-very -]big cat"


def test_identical_strings():
    assert word_diff("same text", "same text") == [("equal", "same text")]
    assert render_word_diff("", "") == ""
