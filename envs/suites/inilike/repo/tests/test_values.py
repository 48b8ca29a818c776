import math

import pytest

from inilike import ParseError, loads


def value(text):
    return loads(f"v = {text}")["v"]


def test_integers():
    assert value("42") == 42
    assert value("-17") == -17
    assert value("+3") == 3
    assert value("1_000_000") == 1000000


def test_prefixed_integers():
    assert value("0xff") == 255
    assert value("0o17") == 15
    assert value("0b101") == 5


def test_leading_zero_is_rejected():
    with pytest.raises(ParseError, match="invalid value '007'"):
        value("007")


def test_floats():
    assert value("0.75") == 0.75
    assert value("-2.5e-3") == -0.0025
    assert value("6.02e23") == 6.02e23


def test_special_floats():
    assert value("inf") == math.inf
    assert value("-inf") == -math.inf
    assert math.isnan(value("nan"))


def test_bools():
    assert value("true") is True
    assert value("false") is False


def test_bool_is_case_sensitive():
    with pytest.raises(ParseError, match="strings need quotes"):
        value("True")


def test_basic_string_escapes():
    assert value(r'"tab\there\nnew \"quoted\" back\\slash"') == 'tab\there\nnew "quoted" back\\slash'


def test_unicode_escapes():
    assert value(r'"caf\u00e9 \U0001F600"') == "café \U0001F600"


def test_bad_escape_is_an_error():
    with pytest.raises(ParseError, match=r"unknown escape \\q"):
        value(r'"\q"')


def test_literal_string_has_no_escapes():
    assert value(r"'C:\new\table'") == r"C:\new\table"


def test_text_after_string_is_an_error():
    with pytest.raises(ParseError, match="unexpected text after the string"):
        value('"a" "b"')


def test_unterminated_string():
    with pytest.raises(ParseError, match="unterminated string"):
        value('"abc')


def test_arrays():
    assert value("[1, 2, 3]") == [1, 2, 3]
    assert value("[]") == []
    assert value('["a", 1, true, [2.5, []]]') == ["a", 1, True, [2.5, []]]


def test_array_of_strings_with_commas_and_brackets():
    assert value('["a, b", "[c]", \'d,e\']') == ["a, b", "[c]", "d,e"]
