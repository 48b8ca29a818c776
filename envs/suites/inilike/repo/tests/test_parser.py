import pytest

from inilike import ConfigError, ParseError, load, loads


def test_tables_and_keys():
    text = """
title = "demo"

[server]
host = "example.org"
port = 8080
"""
    assert loads(text) == {"title": "demo", "server": {"host": "example.org", "port": 8080}}


def test_dotted_table_headers_nest():
    assert loads("[a.b.c]\nx = 1") == {"a": {"b": {"c": {"x": 1}}}}


def test_dotted_keys_nest():
    assert loads("a.b = 1\na.c = 2") == {"a": {"b": 1, "c": 2}}


def test_quoted_keys():
    assert loads('"my key" = 1\n\'other key\' = 2') == {"my key": 1, "other key": 2}


def test_whitespace_around_parts():
    assert loads("[ a . b ]\n  x   =   1  ") == {"a": {"b": {"x": 1}}}


def test_hash_comments_and_blank_lines():
    text = "# header comment\n\na = 1  # trailing comment\n   # indented comment\n"
    assert loads(text) == {"a": 1}


def test_hash_inside_string_is_not_a_comment():
    assert loads('color = "#ff0000"  # red') == {"color": "#ff0000"}


def test_equals_inside_quoted_key():
    assert loads('"a=b" = "c=d"') == {"a=b": "c=d"}


def test_multiline_array():
    text = """
ports = [
    8080,  # main
    8081
]
after = true
"""
    assert loads(text) == {"ports": [8080, 8081], "after": True}


def test_unclosed_array_names_its_line():
    with pytest.raises(ParseError, match=r"<string>:2: array is never closed"):
        loads("a = 1\nb = [1,\n2\n")


def test_duplicate_key():
    with pytest.raises(ParseError, match="duplicate key 'server.port'"):
        loads("[server]\nport = 1\nport = 2")


def test_duplicate_table():
    with pytest.raises(ParseError, match=r"table \[a\] is defined twice"):
        loads("[a]\nx = 1\n[a]\ny = 2")


def test_value_is_not_a_table():
    with pytest.raises(ParseError, match="'a' is a value, not a table"):
        loads("a = 1\n[a.b]\nc = 2")


def test_missing_equals():
    with pytest.raises(ParseError, match="expected 'key = value'"):
        loads("just words")


def test_invalid_bare_key():
    with pytest.raises(ParseError, match="invalid key 'my key'"):
        loads("my key = 1")


def test_parse_error_carries_line():
    with pytest.raises(ParseError) as info:
        loads("a = 1\nb = 'x")
    assert info.value.line == 2
    assert info.value.source == "<string>"
    assert isinstance(info.value, ConfigError)


def test_load_names_the_file(tmp_path):
    path = tmp_path / "app.conf"
    path.write_text("[db]\nname = 'main'\nport = oops\n", encoding="utf-8")
    with pytest.raises(ParseError, match=r"app\.conf:3: invalid value 'oops'"):
        load(path)


def test_load_reads_file(tmp_path):
    path = tmp_path / "app.conf"
    path.write_text("[db]\nname = 'main'\n", encoding="utf-8")
    assert load(path) == {"db": {"name": "main"}}
