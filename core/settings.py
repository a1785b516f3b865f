"""Typed settings, one class per service, read from the environment.

Every class reads plain environment variables (``KAFKA_BOOTSTRAP``,
``MILVUS_URI``...) so that a deployment sets the same names the README lists.
Nothing is read at import time: call the class (or :func:`load`) when needed.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
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
    # Group joins on some brokers take ~session_timeout/2; 10 s keeps restarts quick.
    session_timeout_s: float = Field(default=10.0, alias="CROSSFEED_KAFKA_SESSION_TIMEOUT")
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
    hnsw_ef: int = Field(default=64, alias="CROSSFEED_HNSW_EF")


class RedisSettings(_Base):
    url: SecretStr = Field(default=SecretStr("redis://127.0.0.1:6379/0"), alias="REDIS_URL")
    cache_ttl_s: int = Field(default=300, alias="CROSSFEED_CACHE_TTL")
    key_prefix: str = Field(default="crossfeed", alias="CROSSFEED_REDIS_PREFIX")


class ApiSettings(_Base):
    host: str = Field(default="127.0.0.1", alias="CROSSFEED_API_HOST")
    port: int = Field(default=8000, alias="CROSSFEED_API_PORT")
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, alias="CROSSFEED_MAX_UPLOAD_BYTES")
    max_top_k: int = Field(default=100, alias="CROSSFEED_MAX_TOP_K")
    # A search retries a retriable engine error (Milvus restarting, loading) for this long
    # before answering 503; clients' deadlines are usually 10 s.
    retry_budget_s: float = Field(default=5.0, ge=0.0, le=60.0, alias="CROSSFEED_API_RETRY_S")


class EncoderSettings(_Base):
    # "auto" = CUDA when present, else CPU.
    device: str = Field(default="auto", alias="CROSSFEED_DEVICE")
    # torch intra-op threads on CPU; 0 = half the cores (see encoders.model.apply_cpu_threads).
    cpu_threads: int = Field(default=0, ge=0, alias="CROSSFEED_CPU_THREADS")
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
    # 32 keeps a CPU batch of MiniLM under ~100 ms; 0.5 s bounds added latency.
    batch_size: int = Field(default=32, alias="CROSSFEED_BATCH_SIZE")
    batch_wait_s: float = Field(default=0.5, alias="CROSSFEED_BATCH_WAIT")
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

    @property
    def models_dir(self) -> Path:
        return self.encoder.models_dir or (self.state.state_dir / "models")


def load() -> Settings:
    return Settings()
