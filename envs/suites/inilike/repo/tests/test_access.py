import pytest

from inilike import get, loads


@pytest.fixture
def config():
    return loads('[server]\nport = 8080\n[server.tls]\n"cert file" = "/c"\nenabled = false')


def test_get_nested(config):
    assert get(config, "server.port") == 8080
    assert get(config, "server.tls.enabled") is False


def test_get_quoted_segment(config):
    assert get(config, 'server.tls."cert file"') == "/c"


def test_get_missing_returns_none(config):
    assert get(config, "server.nope") is None
    assert get(config, "server.port.deeper") is None


def test_get_table(config):
    assert get(config, "server.tls") == {"cert file": "/c", "enabled": False}
