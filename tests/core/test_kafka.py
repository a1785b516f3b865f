"""One Kafka connection config: servers and security decided once for every client."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, ClassVar

import pytest

from crossfeed.core.kafka import KafkaConnection, parse_bootstrap
from crossfeed.core.settings import KafkaSettings, Settings
from crossfeed.exceptions import ConfigError

SASL = {"KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "secret"}


def _kafka(**kw: Any) -> KafkaSettings:
    return KafkaSettings(**{"KAFKA_BOOTSTRAP": "k1:9092,[::1]:9093", **kw})


def test_bootstrap_is_parsed_once_with_clear_errors() -> None:
    assert [str(b) for b in parse_bootstrap("k1:9092, kafka://k2:9094,[::1]:9093")] == [
        "k1:9092",
        "k2:9094",
        "[::1]:9093",
    ]
    for bad in (" , ", "k1", "k1:x", "k1:70000", ":9092"):
        with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP"):
            parse_bootstrap(bad)


def test_plaintext_without_credentials() -> None:
    kw = KafkaConnection(_kafka()).kafka_python()
    assert kw == {"bootstrap_servers": ["k1:9092", "[::1]:9093"], "security_protocol": "PLAINTEXT"}


def test_sasl_always_runs_over_tls_for_kafka_python() -> None:
    kw = KafkaConnection(_kafka(**SASL)).kafka_python()
    assert kw["security_protocol"] == "SASL_SSL"
    assert isinstance(kw["ssl_context"], ssl.SSLContext)
    assert kw["ssl_context"].check_hostname
    assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("svc", "secret")


def test_the_workers_faust_app_sends_sasl_over_tls() -> None:
    """The defect: faust.SASLCredentials without an SSL context is SASL_PLAINTEXT, so the
    workers sent the password in clear while the producers used SASL_SSL."""
    from crossfeed.streams.app import create_app

    settings = Settings()
    settings.kafka = _kafka(**SASL)
    app = create_app(settings, stages=("normalize",), dedupe=object())  # type: ignore[arg-type]
    creds = app.conf.broker_credentials
    assert creds is not None
    assert creds.protocol.value == "SASL_SSL"
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert [str(u) for u in app.conf.broker] == ["kafka://k1:9092", "kafka://[::1]:9093"]


def test_tls_without_sasl_and_a_ca_bundle(tmp_path: Path) -> None:
    ca = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match="KAFKA_SSL_CAFILE"):
        KafkaConnection(_kafka(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=str(ca)))
    conn = KafkaConnection(_kafka(KAFKA_SECURITY_PROTOCOL="ssl"))
    assert conn.kafka_python()["security_protocol"] == "SSL"
    assert conn.faust()["broker_credentials"].protocol.value == "SSL"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SASL_USERNAME": "svc"}, "KAFKA_SASL_PASSWORD is not"),
        ({"KAFKA_SASL_PASSWORD": "x"}, "KAFKA_SASL_USERNAME is not"),
        ({**SASL, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "SASL always runs over TLS"),
        ({**SASL, "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "never sent in clear"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KAFKA_SASL_USERNAME"),
        ({**SASL, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
    ],
)
def test_configuration_errors_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KafkaConnection(_kafka(**env))


def test_bootstrap_timeout_only_where_the_client_knows_it() -> None:
    class New:
        DEFAULT_CONFIG: ClassVar[dict[str, int]] = {"bootstrap_timeout_ms": 30_000}

    class Old:
        DEFAULT_CONFIG: ClassVar[dict[str, int]] = {}

    conn = KafkaConnection(_kafka())
    assert conn.kafka_python(New, timeout_s=60)["bootstrap_timeout_ms"] == 10_000
    assert "bootstrap_timeout_ms" not in conn.kafka_python(Old, timeout_s=60)
