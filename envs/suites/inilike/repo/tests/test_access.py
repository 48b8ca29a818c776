from inilike import get, loads

CONFIG = loads('[server]\nport = 8080\n[server.tls]\n"cert.path" = "/c"\nenabled = false')


def test_get_nested():
    assert get(CONFIG, "server.port") == 8080
    assert get(CONFIG, "server.tls.enabled") is False


def test_get_quoted_segment():
    assert get(CONFIG, 'server.tls."cert.path"') == "/c"


def test_get_missing_returns_none():
    assert get(CONFIG, "server.nope") is None
    assert get(CONFIG, "server.port.deeper") is None


def test_get_table():
    assert get(CONFIG, "server.tls") == {"cert.path": "/c", "enabled": False}
