import pytest

from inilike import ConfigError, loads


def test_reference_from_root():
    assert loads('host = "db"\nurl = "pg://${host}/x"')["url"] == "pg://db/x"


def test_reference_across_tables():
    text = '[server]\nhost = "a.org"\n[client]\nurl = "https://${server.host}/"'
    assert loads(text)["client"]["url"] == "https://a.org/"


def test_reference_within_own_table():
    text = '[server]\nhost = "a.org"\nurl = "https://${host}/"'
    assert loads(text)["server"]["url"] == "https://a.org/"


def test_non_string_values_are_written_as_config_text():
    text = 'port = 8080\ndebug = true\nratio = 0.5\ns = "${port} ${debug} ${ratio}"'
    assert loads(text)["s"] == "8080 true 0.5"


def test_chained_references():
    assert loads('a = "x"\nb = "${a}y"\nc = "${b}z"')["c"] == "xyz"


def test_dollar_escape():
    assert loads('price = "$$5 and $${not}"')["price"] == "$5 and ${not}"


def test_strings_inside_arrays_are_interpolated():
    assert loads('v = "1"\nxs = ["${v}", "2"]')["xs"] == ["1", "2"]


def test_unknown_reference():
    with pytest.raises(ConfigError, match=r"s: unknown reference \$\{nope\}"):
        loads('s = "${nope}"')


def test_cycle_is_reported():
    with pytest.raises(ConfigError, match="interpolation cycle: a -> b -> a"):
        loads('a = "${b}"\nb = "${a}"')


def test_reference_to_table_is_an_error():
    with pytest.raises(ConfigError, match="not a single value"):
        loads('s = "${t}"\n[t]\nx = 1')


def test_interpolation_can_be_turned_off():
    assert loads('a = "${b}"', interpolate=False) == {"a": "${b}"}
