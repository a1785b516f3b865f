"""One Kafka connection config for every client crossfeed makes.

Producers, consumers and admin clients (kafka-python) and the stream workers'
faust app all take their servers and security from :class:`KafkaConnection`, so
TLS and SASL are decided once: SASL credentials always travel over TLS
(``SASL_SSL``); ``KAFKA_SECURITY_PROTOCOL=SSL`` asks for TLS without SASL, and a
CA bundle (``KAFKA_SSL_CAFILE``) replaces the system's trust store. A password
is never sent in clear text.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from crossfeed.core.settings import KafkaSettings
from crossfeed.exceptions import ConfigError

# Kafka's default message.max.bytes is ~1 MB: every producer stays below it, with room
# for headers, and a stage never writes a message its own producer would refuse.
MAX_MESSAGE_BYTES = 1_000_000
PRODUCER_MAX_REQUEST_BYTES = MAX_MESSAGE_BYTES + 48_576

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class Broker:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_bootstrap(bootstrap: str) -> list[Broker]:
    """``"h1:9092,[::1]:9093"`` -> two brokers; a bad entry is a :class:`ConfigError`.

    A ``kafka://`` prefix (faust's spelling) is accepted and dropped.
    """
    entries = [e.strip() for e in bootstrap.split(",") if e.strip()]
    if not entries:
        raise ConfigError("KAFKA_BOOTSTRAP is empty")
    out: list[Broker] = []
    for entry in entries:
        hostport = entry.split("://", 1)[1] if "://" in entry else entry
        host, sep, port = hostport.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"KAFKA_BOOTSTRAP entry {entry!r} is not host:port")
        out.append(Broker(host, int(port)))
    return out


class KafkaConnection:
    """Servers and security for one Kafka cluster, validated when built.

    ``kafka_python()`` gives keyword arguments for kafka-python's clients,
    ``faust()`` those for ``faust.App``; both describe the same connection.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.brokers = parse_bootstrap(settings.bootstrap)
        self.username = settings.sasl_username or None
        if self.username and settings.sasl_password is None:
            raise ConfigError("KAFKA_SASL_USERNAME is set but KAFKA_SASL_PASSWORD is not")
        if settings.sasl_password is not None and not self.username:
            raise ConfigError("KAFKA_SASL_PASSWORD is set but KAFKA_SASL_USERNAME is not")
        mechanism = settings.sasl_mechanism.upper()
        if mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"KAFKA_SASL_MECHANISM must be one of {SASL_MECHANISMS}")
        self.mechanism = mechanism
        protocol = (settings.security_protocol or "").upper()
        if not protocol:
            protocol = "SASL_SSL" if self.username else "PLAINTEXT"
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"KAFKA_SECURITY_PROTOCOL must be one of {SECURITY_PROTOCOLS} "
                f"(SASL always runs over TLS), got {settings.security_protocol!r}"
            )
        if self.username and protocol != "SASL_SSL":
            raise ConfigError(
                f"KAFKA_SASL_USERNAME needs KAFKA_SECURITY_PROTOCOL=SASL_SSL, got {protocol}: "
                "a password is never sent in clear text"
            )
        if protocol == "SASL_SSL" and not self.username:
            raise ConfigError("KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME")
        self.security_protocol = protocol
        self.cafile = settings.ssl_cafile
        if self.cafile is not None and not self.cafile.is_file():
            raise ConfigError(f"KAFKA_SSL_CAFILE {self.cafile} is not a file")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def bootstrap(self) -> str:
        """The servers as one comma-separated string (for messages and logs)."""
        return ",".join(str(b) for b in self.brokers)

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (hostnames checked) when the connection uses TLS."""
        if not self.uses_tls:
            return None
        return ssl.create_default_context(cafile=str(self.cafile) if self.cafile else None)

    def kafka_python(self, client: type | None = None, *, timeout_s: float | None = None) -> dict:
        """Keyword arguments for a kafka-python client (``KafkaProducer``, ``KafkaConsumer``,
        ``KafkaAdminClient``). With ``client`` and ``timeout_s``, also how long to wait for a
        first broker connection, where that kafka-python knows the option (3.x; 2.x has
        none and rejects unknown options): the 30 s default makes a dead broker slow to
        report."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": [str(b) for b in self.brokers],
            "security_protocol": self.security_protocol,
        }
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.username:
            password = self.settings.sasl_password
            assert password is not None  # checked in __init__
            kwargs.update(
                sasl_mechanism=self.mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=password.get_secret_value(),
            )
        known = getattr(client, "DEFAULT_CONFIG", {}) if client is not None else {}
        if timeout_s is not None and "bootstrap_timeout_ms" in known:
            kwargs["bootstrap_timeout_ms"] = int(min(timeout_s, 10.0) * 1000)
        return kwargs

    def faust(self) -> dict[str, Any]:
        """``broker=`` and ``broker_credentials=`` for ``faust.App``: the same servers and
        security as :meth:`kafka_python` (SASL with a TLS context, never SASL_PLAINTEXT)."""
        import faust

        credentials: Any = None
        context = self.ssl_context()
        if self.username:
            password = self.settings.sasl_password
            assert password is not None and context is not None
            credentials = faust.SASLCredentials(
                username=self.username,
                password=password.get_secret_value(),
                ssl_context=context,
                mechanism=self.mechanism,
            )
        elif context is not None:
            credentials = faust.SSLCredentials(context)
        return {
            "broker": [f"kafka://{b}" for b in self.brokers],
            "broker_credentials": credentials,
        }
