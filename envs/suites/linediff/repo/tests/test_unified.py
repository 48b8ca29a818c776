from linediff import diff_texts, format_range, unified_diff

OLD = "".join(f"line {n}\n" for n in range(1, 21))


def test_no_difference_gives_empty_string():
    assert diff_texts("a\nb\n", "a\nb\n") == ""


def test_simple_change():
    assert diff_texts("a\nb\nc\n", "a\nB\nc\n", "old.txt", "new.txt") == (
        "--- old.txt\n+++ new.txt\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
    )


def test_default_context_is_three_lines():
    new = OLD.replace("line 10\n", "line ten\n")
    lines = diff_texts(OLD, new).splitlines()
    assert lines[2] == "@@ -7,7 +7,7 @@"
    assert lines[3:6] == [" line 7", " line 8", " line 9"]
    assert lines[-3:] == [" line 11", " line 12", " line 13"]


def test_context_is_cut_at_file_edges():
    new = OLD.replace("line 1\n", "first\n")
    assert diff_texts(OLD, new).splitlines()[2] == "@@ -1,4 +1,4 @@"


def test_distant_changes_make_two_hunks():
    new = OLD.replace("line 2\n", "two\n").replace("line 18\n", "eighteen\n")
    headers = [line for line in diff_texts(OLD, new).splitlines() if line.startswith("@@")]
    assert headers == ["@@ -1,5 +1,5 @@", "@@ -15,6 +15,6 @@"]


def test_close_changes_share_a_hunk():
    new = OLD.replace("line 5\n", "five\n").replace("line 10\n", "ten\n")
    headers = [line for line in diff_texts(OLD, new).splitlines() if line.startswith("@@")]
    assert headers == ["@@ -2,12 +2,12 @@"]


def test_custom_context():
    new = OLD.replace("line 10\n", "line ten\n")
    text = diff_texts(OLD, new, context=1)
    assert "@@ -9,3 +9,3 @@\n line 9\n-line 10\n+line ten\n line 11\n" in text


def test_single_line_range_omits_count():
    assert diff_texts("a\n", "b\n") == "--- a\n+++ b\n@@ -1 +1 @@\n-a\n+b\n"


def test_format_range():
    assert format_range(0, 3) == "1,3"
    assert format_range(4, 1) == "5"


def test_unified_diff_accepts_line_lists():
    text = unified_diff(["x\n", "y\n"], ["x\n", "z\n"], "f", "g", context=0)
    assert text == "--- f\n+++ g\n@@ -2 +2 @@\n-y\n+z\n"


def test_negative_context_is_rejected():
    try:
        diff_texts("a\n", "b\n", context=-1)
    except ValueError as exc:
        assert "context" in str(exc)
    else:
        raise AssertionError("expected ValueError")
