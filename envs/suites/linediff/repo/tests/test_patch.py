import pytest

from linediff import PatchError, apply_patch, diff_texts, parse_patch

OLD = "".join(f"line {n}\n" for n in range(1, 21))
NEW = OLD.replace("line 3\n", "line three\n").replace("line 15\n", "").replace("line 19\n", "line 19\nextra\n")


def test_apply_own_diff():
    assert apply_patch(OLD, diff_texts(OLD, NEW)) == NEW


def test_reverse_apply():
    assert apply_patch(NEW, diff_texts(OLD, NEW), reverse=True) == OLD


def test_parse_patch_structure():
    patch = parse_patch(diff_texts(OLD, NEW, "a/f.txt", "b/f.txt"))
    assert len(patch) == 1
    assert (patch[0].old_path, patch[0].new_path) == ("a/f.txt", "b/f.txt")
    assert [h.header for h in patch[0].hunks] == ["@@ -1,6 +1,6 @@", "@@ -12,9 +12,9 @@"]
    assert patch[0].hunks[0].old_start == 0


def test_header_timestamps_and_git_lines_are_ignored():
    text = (
        "diff --git a/f b/f\nindex 123..456 100644\n"
        "--- a/f\t2024-01-01 00:00:00\n+++ b/f\t2024-01-02 00:00:00\n"
        "@@ -1,2 +1,2 @@ def context():\n a\n-b\n+c\n"
    )
    patch = parse_patch(text)[0]
    assert patch.old_path == "a/f"
    assert apply_patch("a\nb\n", text) == "a\nc\n"


def test_apply_after_lines_were_added_above():
    patch = diff_texts(OLD, OLD.replace("line 10\n", "ten\n"))
    shifted = "new 1\nnew 2\n" + OLD
    assert apply_patch(shifted, patch) == "new 1\nnew 2\n" + OLD.replace("line 10\n", "ten\n")


def test_mismatched_context_is_an_error():
    patch = diff_texts(OLD, OLD.replace("line 10\n", "ten\n"))
    with pytest.raises(PatchError, match=r"hunk @@ -7,7 \+7,7 @@ does not apply"):
        apply_patch(OLD.replace("line 9\n", "nine\n"), patch)


def test_short_hunk_is_an_error():
    with pytest.raises(PatchError, match="cut short"):
        parse_patch("--- a\n+++ b\n@@ -1,3 +1,3 @@\n a\n-b\n")


def test_long_hunk_is_an_error():
    with pytest.raises(PatchError, match="more lines than its header says"):
        parse_patch("--- a\n+++ b\n@@ -1,2 +1,2 @@\n a\n-b\n-c\n+d\n")


def test_hunk_without_file_header():
    with pytest.raises(PatchError, match="before any"):
        parse_patch("@@ -1 +1 @@\n-a\n+b\n")


def test_two_files_need_a_choice():
    two = diff_texts("a\n", "b\n", "x", "x") + diff_texts("c\n", "d\n", "y", "y")
    assert len(parse_patch(two)) == 2
    with pytest.raises(PatchError, match="exactly one file"):
        apply_patch("a\n", two)
