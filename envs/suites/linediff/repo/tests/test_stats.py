from linediff import FileStat, diff_texts, diffstat, format_diffstat


def test_counts_per_file():
    patch = diff_texts("a\nb\nc\n", "a\nB\nc\nd\n", "a/x.py", "b/x.py")
    assert diffstat(patch) == [FileStat("x.py", 2, 1)]


def test_deleted_file_uses_old_path():
    patch = diff_texts("a\nb\n", "", "a/gone.txt", "/dev/null")
    assert diffstat(patch) == [FileStat("gone.txt", 0, 2)]


def test_format_single_file():
    assert format_diffstat([FileStat("x.py", 2, 1)]) == " x.py | 3 ++-\n 1 file changed, 2 insertions(+), 1 deletion(-)\n"


def test_format_scales_long_bars():
    text = format_diffstat([FileStat("big", 100, 0), FileStat("small", 1, 0)], width=10)
    assert text.splitlines()[:2] == [" big   | 100 ++++++++++", " small |   1 +"]


def test_format_nothing():
    assert format_diffstat([]) == " 0 files changed\n"
