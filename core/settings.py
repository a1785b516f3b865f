"""Typed settings, one class per service, read from the environment.

Every class reads plain environment variables (``KAFKA_BOOTSTRAP``,
``MILVUS_URI``...) so that a deployment sets the same names the README lists.
Nothing is read at import time: call the class (or :func:`load`) when needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_state_dir() -> Path:
    return Path.home() / ".local" / "state" / "crossfeed"


class _Base(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)


class StateSettings(_Base):
    """Where local engines keep pidfiles, logs, data; where models live."""

    state_dir: Path = Field(default_factory=_default_state_dir, alias="CROSSFEED_STATE_DIR")


class KafkaSettings(_Base):
    bootstrap: str = Field(default="127.0.0.1:9092", alias="KAFKA_BOOTSTRAP")
    topic_raw: str = Field(default="posts.raw", alias="CROSSFEED_TOPIC_RAW")
    topic_clean: str = Field(default="posts.clean", alias="CROSSFEED_TOPIC_CLEAN")
    topic_vectors: str = Field(default="posts.vectors", alias="CROSSFEED_TOPIC_VECTORS")
    topic_deadletter: str = Field(default="posts.deadletter", alias="CROSSFEED_TOPIC_DEADLETTER")
    partitions: int = Field(default=4, alias="CROSSFEED_PARTITIONS")
    # posts.clean is the source `crossfeed reindex` re-embeds from: compacted (the latest
    # clean post per post id, kept for good) instead of deleted after the retention time,
    # so a back-fill covers every post, not just the last week's.
    compact_clean_topic: bool = Field(default=True, alias="CROSSFEED_COMPACT_CLEAN_TOPIC")
    # Replicas of the topics crossfeed creates. 0: the broker's default for the topics the
    # admin client creates, and 1 for those a worker creates (its client cannot ask for the
    # broker's default). Set it on a cluster (3 with min.insync.replicas 2).
    replication_factor: int = Field(default=0, ge=0, le=32767, alias="CROSSFEED_TOPIC_REPLICATION")
    # Group joins on some brokers take ~session_timeout/2; 10 s keeps restarts quick.
    session_timeout_s: float = Field(default=10.0, alias="CROSSFEED_KAFKA_SESSION_TIMEOUT")
    # How long a worker's fetch may wait on the broker for new records. Apache Kafka answers
    # as soon as one arrives; a broker that holds the fetch for the whole wait (the local
    # one does) adds it to every hop, so keep it short (streams/transport.py).
    fetch_max_wait_ms: int = Field(
        default=100, ge=1, le=30_000, alias="CROSSFEED_KAFKA_FETCH_MAX_WAIT_MS"
    )
    sasl_username: str | None = Field(default=None, alias="KAFKA_SASL_USERNAME")
    sasl_password: SecretStr | None = Field(default=None, alias="KAFKA_SASL_PASSWORD")
    sasl_mechanism: str = Field(default="PLAIN", alias="KAFKA_SASL_MECHANISM")
    # Empty: SASL_SSL with credentials, else PLAINTEXT; "SSL" is TLS without SASL.
    security_protocol: str = Field(default="", alias="KAFKA_SECURITY_PROTOCOL")
    # A CA bundle for the brokers' certificates (empty: the system's trust store).
    ssl_cafile: Path | None = Field(default=None, alias="KAFKA_SSL_CAFILE")


class MilvusSettings(_Base):
    uri: str = Field(default="http://127.0.0.1:19530", alias="MILVUS_URI")
    token: SecretStr | None = Field(default=None, alias="MILVUS_TOKEN")
    collection: str = Field(default="crossfeed_posts", alias="CROSSFEED_COLLECTION")
    # HNSW: M=16, efConstruction=200 are Milvus' documented defaults for good recall;
    # ef at query time is raised to at least top_k.
    hnsw_m: int = Field(default=16, alias="CROSSFEED_HNSW_M")
    hnsw_ef_construction: int = Field(default=200, alias="CROSSFEED_HNSW_EF_CONSTRUCTION")
    hnsw_ef: int = Field(default=64, ge=1, le=16_384, alias="CROSSFEED_HNSW_EF")
    # A filter that keeps part of the rows needs a wider graph search: on 100k rows like
    # the corpus's, recall@10 with a tag kept by 14% of them was 0.75 at ef 64, 0.93 at
    # 512, 0.98 at 4096 (a time window kept by 33%: 0.93, 0.98, 0.99; unfiltered at 64:
    # 0.98). `crossfeed bench query --rows N` measures it.
    hnsw_ef_filtered: int = Field(default=512, ge=1, le=16_384, alias="CROSSFEED_HNSW_EF_FILTERED")


class RedisSettings(_Base):
    url: SecretStr = Field(default=SecretStr("redis://127.0.0.1:6379/0"), alias="REDIS_URL")
    cache_ttl_s: int = Field(default=300, alias="CROSSFEED_CACHE_TTL")
    key_prefix: str = Field(default="crossfeed", alias="CROSSFEED_REDIS_PREFIX")
    # The circuit breaker around Redis (core/breaker.py): open after this many failures in a
    # row, then one trial call every breaker_reset_s seconds until Redis answers again.
    breaker_failures: int = Field(default=2, ge=1, le=100, alias="CROSSFEED_REDIS_BREAKER_FAILURES")
    breaker_reset_s: float = Field(
        default=5.0, gt=0, le=300, alias="CROSSFEED_REDIS_BREAKER_RESET_S"
    )


class ApiSettings(_Base):
    host: str = Field(default="127.0.0.1", alias="CROSSFEED_API_HOST")
    port: int = Field(default=8000, alias="CROSSFEED_API_PORT")
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, alias="CROSSFEED_MAX_UPLOAD_BYTES")
    max_top_k: int = Field(default=100, alias="CROSSFEED_MAX_TOP_K")
    # A search retries a retriable engine error (Milvus restarting, loading) for this long
    # before answering 503; clients' deadlines are usually 10 s.
    retry_budget_s: float = Field(default=5.0, ge=0.0, le=60.0, alias="CROSSFEED_API_RETRY_S")
    # API keys: "auto" = required whenever the API binds to anything but loopback.
    auth: Literal["auto", "on", "off"] = Field(default="auto", alias="CROSSFEED_API_AUTH")
    # Per key, in cost units (an image upload costs 5, anything else 1); `limits` syntax.
    rate_limit: str = Field(default="600/minute", alias="CROSSFEED_RATE_LIMIT")
    # /metrics without a key from anywhere (a scraper on a private network); else loopback.
    metrics_public: bool = Field(default=False, alias="CROSSFEED_METRICS_PUBLIC")

    @field_validator("rate_limit")
    @classmethod
    def _limit(cls, v: str) -> str:
        from limits import parse

        try:
            parse(v)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '600/minute': {v!r}") from exc
        return v

    # Paging: how deep a query can be followed (posts), and the key signing cursors
    # (unset: a random key per process; API replicas behind one address need the same).
    max_search_depth: int = Field(default=1000, ge=1, alias="CROSSFEED_MAX_SEARCH_DEPTH")
    cursor_secret: SecretStr | None = Field(default=None, alias="CROSSFEED_CURSOR_SECRET")


class ClientSettings(_Base):
    """What :mod:`crossfeed.client` and the query commands (``crossfeed search``) use."""

    # Empty: http://<CROSSFEED_API_HOST>:<CROSSFEED_API_PORT> (a wildcard host as 127.0.0.1).
    url: str = Field(default="", alias="CROSSFEED_API_URL")
    # Sent as the X-API-Key header when set.
    api_key: SecretStr | None = Field(default=None, alias="CROSSFEED_API_KEY")
    timeout_s: float = Field(default=30.0, gt=0, alias="CROSSFEED_CLIENT_TIMEOUT")
    # Retries after the first try, for connection errors and 503 only.
    retries: int = Field(default=3, ge=0, le=20, alias="CROSSFEED_CLIENT_RETRIES")

    def resolved_url(self) -> str:
        if self.url:
            return self.url
        api = ApiSettings()
        host = "127.0.0.1" if api.host in ("", "0.0.0.0") else api.host
        host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
        return f"http://{host}:{api.port}"


class SourceSettings(_Base):
    """The connectors (``crossfeed ingest bluesky|mastodon``)."""

    jetstream_url: str = Field(
        default="wss://jetstream2.us-east.bsky.network/subscribe", alias="CROSSFEED_JETSTREAM_URL"
    )
    mastodon_url: str = Field(default="", alias="CROSSFEED_MASTODON_URL")
    # A user access token (read scope); Mastodon 4.2+ wants one for every stream.
    mastodon_token: SecretStr | None = Field(default=None, alias="MASTODON_ACCESS_TOKEN")
    # Prometheus metrics of a connector on 127.0.0.1:<port> (0: a free port, shown in
    # `crossfeed status`).
    metrics_port: int = Field(default=0, ge=0, le=65535, alias="CROSSFEED_SOURCE_METRICS_PORT")
    # No event (heartbeats count) for this long is logged as a warning.
    quiet_warn_s: float = Field(default=30.0, gt=0, alias="CROSSFEED_SOURCE_QUIET_WARN")


class EncoderSettings(_Base):
    # "auto" = CUDA when present, else CPU.
    device: str = Field(default="auto", alias="CROSSFEED_DEVICE")
    # torch and ONNX Runtime intra-op threads on CPU; 0 = half the cores
    # (see encoders.model.apply_cpu_threads).
    cpu_threads: int = Field(default=0, ge=0, alias="CROSSFEED_CPU_THREADS")
    # What runs the towers (encoders/runtime.py): "auto" = ONNX Runtime on the CPU when
    # onnxruntime is importable, torch on CUDA; "torch"; "onnx" (CPU only). Measured on
    # this 2-core box at 1 thread: README "Encoder runtimes".
    runtime: Literal["auto", "torch", "onnx"] = Field(
        default="auto", alias="CROSSFEED_ENCODER_RUNTIME"
    )
    # The ONNX text tower's weights: "int8" (fused attention, every weight matrix int8),
    # "int8-ffn-fp32" (feed-forward down-projections kept fp32: closer to torch, slower)
    # or "none" (fp32). Chosen by `crossfeed eval runtimes` (README "Encoder runtimes").
    onnx_text_quant: Literal["int8", "int8-ffn-fp32", "none"] = Field(
        default="int8", alias="CROSSFEED_ONNX_TEXT_QUANT"
    )
    # Where exported ONNX graphs are cached; empty = <models_dir>/.onnx.
    onnx_cache_dir: Path | None = Field(default=None, alias="CROSSFEED_ONNX_CACHE_DIR")
    # A sentence-transformers name or path; empty = the offline all-MiniLM-L6-v2 package.
    text_model: str = Field(default="", alias="CROSSFEED_TEXT_MODEL")
    # A checkpoint path; empty = the offline EfficientNet-Lite0 package.
    image_model: str = Field(default="", alias="CROSSFEED_IMAGE_MODEL")
    # Directory of projection-head versions; empty = <state_dir>/models.
    models_dir: Path | None = Field(default=None, alias="CROSSFEED_MODELS_DIR")
    # Head version to load; "latest" = the newest in models_dir.
    model_version: str = Field(default="latest", alias="CROSSFEED_MODEL_VERSION")
    # Video: N frames per second, capped; keyframes only when fps <= 0.
    video_fps: float = Field(default=1.0, alias="CROSSFEED_VIDEO_FPS")
    video_max_frames: int = Field(default=16, alias="CROSSFEED_VIDEO_MAX_FRAMES")
    # Video moments: windows of at least this many seconds get their own vectors, so a
    # query finds where in a video it matches (0 = whole videos only). 4 s was the best of
    # 2/3/4/6/8 s by R@1 (IoU >= 0.5) on validation videos of `crossfeed eval moments`
    # (synthetic 2-6 s scenes; tag space 0.636, 3 s 0.633, 6 s 0.507); real footage with
    # other shot lengths may prefer another window.
    video_moment_s: float = Field(default=4.0, ge=0.0, alias="CROSSFEED_VIDEO_MOMENT_S")
    max_media_bytes: int = Field(default=20 * 1024 * 1024, alias="CROSSFEED_MAX_MEDIA_BYTES")
    max_image_pixels: int = Field(default=40_000_000, ge=1, alias="CROSSFEED_MAX_IMAGE_PIXELS")
    # Frames an animated image or a video may have, read from its headers before any
    # decoding (10 minutes at 30 fps); more is refused as a decompression bomb.
    max_media_frames: int = Field(default=18_000, ge=1, alias="CROSSFEED_MAX_MEDIA_FRAMES")


class StreamSettings(_Base):
    app_id: str = Field(default="crossfeed", alias="CROSSFEED_APP_ID")
    # Micro-batches: flush at batch_size items or after batch_wait_s, whichever first.
    # 32 keeps a CPU batch of MiniLM under ~100 ms. The wait is paid by a post that finds
    # the stage idle, in the embed and the index stage: 0.05 s (0.5 s before) took idle
    # freshness from 0.95 to 0.36 s (p50). Under load a batch fills from records already
    # fetched while the previous one ran, so the short wait did not lower throughput.
    batch_size: int = Field(default=32, ge=1, alias="CROSSFEED_BATCH_SIZE")
    batch_wait_s: float = Field(default=0.05, gt=0, le=10, alias="CROSSFEED_BATCH_WAIT")
    # Media fetched by URL: only these schemes, this timeout.
    allowed_url_schemes: tuple[str, ...] = ("http", "https")
    fetch_timeout_s: float = Field(default=5.0, gt=0, alias="CROSSFEED_FETCH_TIMEOUT")
    # A whole URL fetch (retries, redirects and the body) ends by then, whatever the
    # server does: a slow-drip server cannot hold an embed thread longer.
    fetch_total_s: float = Field(default=30.0, gt=0, alias="CROSSFEED_FETCH_TOTAL_S")
    # Media URLs resolving to private/loopback addresses are refused unless this is set
    # (server-side request forgery guard).
    allow_private_urls: bool = Field(default=False, alias="CROSSFEED_ALLOW_PRIVATE_URLS")
    # Local media paths must live under one of these roots (empty = no local paths).
    media_roots: list[Path] = Field(default_factory=list, alias="CROSSFEED_MEDIA_ROOTS")
    # How long a content hash is remembered for repost detection.
    dedupe_ttl_s: int = Field(default=7 * 24 * 3600, alias="CROSSFEED_DEDUPE_TTL")
    # Erased post ids are remembered this long (longer than posts wait on the topics), so
    # a copy still on its way is dropped instead of indexed: erase wins.
    erasure_retention_s: int = Field(
        default=30 * 24 * 3600, ge=3600, alias="CROSSFEED_ERASURE_RETENTION"
    )
    # Translation step (off by default: one extra index search per media item): the
    # embed stage proposes tags for the images and videos of posts that carry none.
    suggest_tags: bool = Field(default=False, alias="CROSSFEED_SUGGEST_TAGS")
    suggest_top_k: int = Field(default=5, ge=1, le=16, alias="CROSSFEED_SUGGEST_TOP_K")
    # A suggestion's score is its weighted share of the neighbours' votes (mixed with
    # p(tag) for a tag head). 0.4 maximised F0.5 (precision-weighted) of the emitted tags
    # on a validation carve-out of the clipart train split (split seed 0, `crossfeed eval
    # clipart`), for the tag space and for ridge alike: tag space validation F0.5 0.53
    # (0.1: 0.32). On test it emits 1.6 tags per item at precision 0.57, recall 0.48,
    # for 84 % of the media; plain top-5 (0): precision 0.24, recall 0.63.
    suggest_min_score: float = Field(
        default=0.4, ge=0.0, le=1.0, alias="CROSSFEED_SUGGEST_MIN_SCORE"
    )
    suggest_neighbours: int = Field(default=20, ge=1, le=200, alias="CROSSFEED_SUGGEST_NEIGHBOURS")
    # A worker's Prometheus endpoint (/metrics): 0 = off. `crossfeed serve --workers N` gives
    # its workers this port plus their index (port, port + 1, ...). Loopback unless a
    # container sets the host (e.g. 0.0.0.0, reached only through its network policy).
    metrics_port: int = Field(default=0, ge=0, le=65535, alias="CROSSFEED_WORKER_METRICS_PORT")
    metrics_host: str = Field(default="127.0.0.1", alias="CROSSFEED_WORKER_METRICS_HOST")


class LiveSettings(_Base):
    """Live monitoring: standing queries and their events, thumbnails, freshness."""

    # Events kept per subscription (a Redis Stream, trimmed approximately to this length):
    # a client reconnecting with Last-Event-ID gets what it missed within this window.
    events_maxlen: int = Field(default=10_000, ge=10, alias="CROSSFEED_EVENTS_MAXLEN")
    # How long a (subscription, post) match is remembered so a replayed batch does not
    # record it twice; longer than any replay (at-least-once redelivery) can take.
    match_dedupe_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, alias="CROSSFEED_MATCH_TTL")
    max_subscriptions: int = Field(default=100_000, ge=1, alias="CROSSFEED_MAX_SUBSCRIPTIONS")
    # SSE: a comment line after this many idle seconds keeps proxies from closing streams.
    sse_heartbeat_s: float = Field(default=15.0, gt=0, le=300, alias="CROSSFEED_SSE_HEARTBEAT_S")
    # Thumbnails the embed stage makes of every image, video and video moment: at most
    # thumb_px on the long side and thumb_max_bytes of JPEG, kept thumb_ttl_s in Redis.
    thumbnails: bool = Field(default=True, alias="CROSSFEED_THUMBNAILS")
    thumb_px: int = Field(default=256, ge=16, le=512, alias="CROSSFEED_THUMB_PX")
    thumb_max_bytes: int = Field(default=32 * 1024, ge=2048, alias="CROSSFEED_THUMB_MAX_BYTES")
    thumb_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, alias="CROSSFEED_THUMB_TTL")
    # The API re-reads per-stage consumer lag from the broker this often (0 = never).
    lag_refresh_s: float = Field(default=10.0, ge=0, alias="CROSSFEED_LAG_REFRESH_S")
    # Standing-query matches an index worker holds in memory while Redis is away (written
    # when it is back); beyond this many, new matches are dropped and counted.
    match_buffer: int = Field(default=10_000, ge=0, alias="CROSSFEED_MATCH_BUFFER")
    # The percolator's int8 first pass for banks of >= 2048 subscriptions (exact either
    # way: it only rules out subscriptions, with a rigorous bound; live/screen.py), and
    # the BLAS threads of its products (0 = the library's default, one per core).
    percolator_screen: bool = Field(default=True, alias="CROSSFEED_PERCOLATOR_SCREEN")
    percolator_threads: int = Field(default=1, ge=0, alias="CROSSFEED_PERCOLATOR_THREADS")


class TrendSettings(_Base):
    """Trend search: burst detection per hashtag and per cluster of the shared space."""

    enabled: bool = Field(default=True, alias="CROSSFEED_TRENDS")
    # Event-time window the counts are kept per; bursts are scored window against baseline.
    window_s: float = Field(default=60.0, gt=0, le=86_400, alias="CROSSFEED_TRENDS_WINDOW_S")
    # Posts older than the newest event time minus this are not counted (late allowance).
    late_s: float = Field(default=120.0, ge=0, alias="CROSSFEED_TRENDS_LATE_S")
    # Windows of history kept per item (the sparkline series and the baseline's memory).
    history_windows: int = Field(default=60, ge=3, le=10_000, alias="CROSSFEED_TRENDS_HISTORY")
    max_clusters: int = Field(default=500, ge=1, alias="CROSSFEED_TRENDS_MAX_CLUSTERS")
    seed: int = Field(default=0, alias="CROSSFEED_TRENDS_SEED")


class Settings:
    """All settings together; built once by the CLI and passed down."""

    def __init__(self) -> None:
        self.state = StateSettings()
        self.kafka = KafkaSettings()
        self.milvus = MilvusSettings()
        self.redis = RedisSettings()
        self.api = ApiSettings()
        self.encoder = EncoderSettings()
        self.stream = StreamSettings()
        self.live = LiveSettings()
        self.trends = TrendSettings()

    @property
    def models_dir(self) -> Path:
        return self.encoder.models_dir or (self.state.state_dir / "models")


def load() -> Settings:
    return Settings()
