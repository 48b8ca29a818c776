import math

import pytest

from inilike import ConfigError, dumps, loads


def test_dump_scalars():
    text = dumps({"name": "demo", "n": 3, "on": True, "ratio": 0.5})
    assert text == 'name = "demo"\nn = 3\non = true\nratio = 0.5\n'


def test_dump_tables_after_values():
    config = {"server": {"host": "h"}, "title": "t"}
    assert dumps(config) == 'title = "t"\n\n[server]\nhost = "h"\n'


def test_dump_string_escapes():
    assert dumps({"s": 'a"b\\c\nd\x01'}) == 's = "a\\"b\\\\c\\nd\\u0001"\n'


def test_dump_arrays():
    assert dumps({"xs": [1, "a", [True]]}) == 'xs = [1, "a", [true]]\n'


def test_dump_key_with_space_is_quoted():
    assert dumps({"my key": 1}) == '"my key" = 1\n'


def test_dump_empty_table_survives():
    assert loads(dumps({"empty": {}})) == {"empty": {}}


def test_dump_rejects_unsupported_types():
    with pytest.raises(ConfigError, match="cannot write a.b: unsupported type NoneType"):
        dumps({"a": {"b": None}})


def test_dump_rejects_non_string_keys():
    with pytest.raises(ConfigError, match="keys must be strings"):
        dumps({1: "x"})


def test_round_trip():
    config = {
        "title": "demo \u00e9",
        "count": -12,
        "flags": [True, False],
        "server": {"host": "example.org", "ports": [80, 443], "tls": {"cert": "C:\\certs\\a.pem"}},
        "weird": {"inf": math.inf},
    }
    assert loads(dumps(config), interpolate=False) == config
