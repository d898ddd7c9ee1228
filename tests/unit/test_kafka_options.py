"""[kafka] settings → client options: security passthrough, password file, embedded."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from streamvae.config import load_settings
from streamvae.kafka import client_options, kafka_spec


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({}, {"security_protocol": "PLAINTEXT"}),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "u",
                "sasl_password": "p",
            },
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": "u",
                "sasl_plain_password": "p",
            },
        ),
    ],
)
def test_security_options(section: dict[str, str], expected: dict[str, str]) -> None:
    opts = client_options(kafka_spec(load_settings(None, kafka=section).kafka))
    for key, value in expected.items():
        assert opts[key] == value
    if not section:
        assert "sasl_mechanism" not in opts
        assert "ssl_context" not in opts


def test_ssl_context_and_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    settings = load_settings(
        None,
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "u",
            "sasl_password_file": str(secret),
        },
    )
    opts = client_options(kafka_spec(settings.kafka))
    assert isinstance(opts["ssl_context"], ssl.SSLContext)
    assert opts["sasl_plain_password"] == "from-file"


def test_bootstrap_override_and_timeouts() -> None:
    settings = load_settings(
        None, kafka={"bootstrap_servers": "embedded", "request_timeout_ms": 1234}
    )
    spec = kafka_spec(settings.kafka, "127.0.0.1:9999")
    assert spec.bootstrap_servers == "127.0.0.1:9999"
    assert client_options(spec)["request_timeout_ms"] == 1234


def test_repeat_filter_lets_one_message_per_window_through() -> None:
    import logging

    from streamvae.kafka import RepeatFilter
    from tests.conftest import FakeClock

    clock = FakeClock()
    flt = RepeatFilter(window_s=10.0, clock=clock)

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, (), None)

    assert flt.filter(record("Unable connect to node %s"))
    assert not flt.filter(record("Unable connect to node %s"))
    assert not flt.filter(record("Unable connect to node %s"))
    assert flt.filter(record("another message"))
    clock.advance(10.0)
    again = record("Unable connect to node %s")
    assert flt.filter(again)
    assert "repeated 2x" in str(again.msg)
