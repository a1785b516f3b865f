"""Where each engine is configured to be, and whether it answers a real request.

Readiness means more than an open port: Kafka answers a metadata request, Milvus
lists its collections, Redis answers PING. Each probe is one short attempt (a few
seconds at most), so callers can poll several engines round-robin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from crossfeed.core.kafka import KafkaConnection, parse_bootstrap
from crossfeed.core.settings import Settings
from crossfeed.exceptions import ConfigError
from crossfeed.ops.engines.procs import Endpoint, reachable

ENGINES = ("kafka", "milvus", "redis")
PROBE_TIMEOUT_S = 3.0


# --------------------------------------------------------------------------- endpoints


def endpoints(name: str, settings: Settings) -> list[Endpoint]:
    """Where ``name`` is configured to be, parsed and validated."""
    if name == "kafka":
        return [Endpoint(b.host, b.port) for b in parse_bootstrap(settings.kafka.bootstrap)]
    if name == "milvus":
        return [_url_endpoint(settings.milvus.uri, "MILVUS_URI", ("http", "https", "tcp"), 19530)]
    if name == "redis":
        url = settings.redis.url.get_secret_value()
        return [_url_endpoint(url, "REDIS_URL", ("redis", "rediss"), 6379)]
    raise ConfigError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")


def _url_endpoint(url: str, what: str, schemes: tuple[str, ...], default_port: int) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(
            f"{what} must look like {schemes[0]}://host:port, got a {parts.scheme!r} URL"
        )
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    return Endpoint(parts.hostname, port)


def display_url(name: str, settings: Settings) -> str:
    if name == "kafka":
        return settings.kafka.bootstrap
    if name == "milvus":
        return settings.milvus.uri
    parts = urlsplit(settings.redis.url.get_secret_value())
    if parts.password or parts.username:
        netloc = f"***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()
    return parts.geturl()


def probe(name: str, settings: Settings) -> str | None:
    """None when ``name`` answers a real request, else why not (one short attempt)."""
    eps = endpoints(name, settings)
    if not any(reachable(ep) for ep in eps):
        return f"nothing listens on {', '.join(map(str, eps))}"
    try:
        if name == "kafka":
            _probe_kafka(settings)
        elif name == "milvus":
            _probe_milvus(settings)
        else:
            _probe_redis(settings)
    except Exception as exc:  # any client error only means "not ready yet"
        return f"{type(exc).__name__}: {exc}"
    return None


def _probe_kafka(settings: Settings) -> None:
    from kafka import KafkaAdminClient

    client = KafkaAdminClient(
        **KafkaConnection(settings.kafka).kafka_python(KafkaAdminClient, timeout_s=PROBE_TIMEOUT_S),
        client_id="crossfeed-up",
        request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
    )
    try:
        client.list_topics()  # a MetadataRequest round trip
    finally:
        client.close()


def _probe_milvus(settings: Settings) -> None:
    from crossfeed.indexer.client import milvus_client

    client = milvus_client(settings.milvus, timeout_s=PROBE_TIMEOUT_S, dedicated=False)
    try:
        client.list_collections()
    finally:
        client.close()


def _probe_redis(settings: Settings) -> None:
    import redis

    client = redis.Redis.from_url(
        settings.redis.url.get_secret_value(),
        socket_connect_timeout=PROBE_TIMEOUT_S,
        socket_timeout=PROBE_TIMEOUT_S,
    )
    try:
        if not client.ping():
            raise ConnectionError("PING not answered")
    finally:
        client.close()
