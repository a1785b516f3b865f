"""Training rows from posts: media features, text features and normalised hashtags.

Shared by ``crossfeed train`` and ``crossfeed eval clipart``. Every (media, text)
pair of a post is a row: the media's tower features (cached by
:func:`~crossfeed.train.features.extract_features`), the text-tower
features of the text the stream embeds for the post (clean text plus hashtags,
with their own cache) and the post's normalised hashtags. Posts can also be
read back from the raw Kafka topic.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crossfeed.core.schema import Post
from crossfeed.encoders.exceptions import TrainingError

if TYPE_CHECKING:
    from crossfeed.core.settings import Settings
    from crossfeed.encoders.model import SharedSpaceEmbedder

log = logging.getLogger(__name__)

TEXT_CACHE_FORMAT = "post-text-v1"


@dataclass
class TrainingData:
    """Aligned rows: media features, text features and the post's tags."""

    post_ids: list[str]
    image: np.ndarray
    text: np.ndarray
    tags: list[list[str]]
    modalities: list[str]
    media_refs: list[str]
    data_hash: str
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.post_ids)

    def subset(self, rows: np.ndarray | Sequence[int]) -> TrainingData:
        idx = np.asarray(rows, dtype=np.int64)
        return replace(
            self,
            post_ids=[self.post_ids[i] for i in idx],
            image=self.image[idx],
            text=self.text[idx],
            tags=[self.tags[i] for i in idx],
            modalities=[self.modalities[i] for i in idx],
            media_refs=[self.media_refs[i] for i in idx],
        )


def text_features_cached(
    embedder: SharedSpaceEmbedder, texts: Sequence[str], cache_path: Path | None
) -> np.ndarray:
    """Text-tower features of ``texts``, computing only those not in the cache."""
    from crossfeed.train.features import FeatureCache

    cache = FeatureCache(cache_path)
    model = embedder.tower_id("text")

    def key(text: str) -> str:
        return hashlib.sha256(f"{TEXT_CACHE_FORMAT}|{model}|{text}".encode()).hexdigest()

    keys = [key(t) for t in texts]
    missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in cache}
    if missing:
        order = list(missing)
        for k, vec in zip(order, embedder.text_features([missing[k] for k in order]), strict=True):
            cache.put(k, vec)
        cache.save()
    if not keys:
        return np.zeros((0, 1), dtype=np.float32)
    return np.stack([cache[k] for k in keys]).astype(np.float32)


def load_training_pairs(
    posts_path: Path,
    posts: Sequence[Post],
    embedder: SharedSpaceEmbedder,
    media_roots: Sequence[Path],
    *,
    cache_path: Path | None = None,
    progress: bool = True,
) -> TrainingData:
    """Features of every (media, text) pair of ``posts_path`` (``posts`` = its parsed lines).

    Media features come from :func:`extract_features` (cached next to the
    file unless ``cache_path`` is given); text features are computed on the
    text the stream would embed, with their own cache beside the media cache.
    """
    from crossfeed.train.features import extract_features
    from crossfeed.train.tags import post_tags, post_text

    posts_path = Path(posts_path)
    media_cache = cache_path or posts_path.with_name(posts_path.name + ".features.npz")
    pairs = extract_features(
        posts_path, embedder, cache_path=media_cache, media_roots=media_roots, progress=progress
    )
    by_id = {p.id: p for p in posts}
    keep = [i for i, pid in enumerate(pairs.post_ids) if pid in by_id]
    texts = [post_text(by_id[pairs.post_ids[i]]) for i in keep]
    text_cache = media_cache.with_name(media_cache.stem + ".text.npz")
    text_feats = text_features_cached(embedder, texts, text_cache)
    return TrainingData(
        post_ids=[pairs.post_ids[i] for i in keep],
        image=pairs.image[keep],
        text=text_feats,
        tags=[post_tags(by_id[pairs.post_ids[i]]) for i in keep],
        modalities=[pairs.modalities[i] for i in keep],
        media_refs=[pairs.media_refs[i] for i in keep],
        data_hash=pairs.data_hash,
        skipped=pairs.skipped,
    )


def read_posts_from_kafka(
    settings: Settings, topic: str, *, max_posts: int, idle_s: float = 5.0
) -> list[Post]:
    """Posts of ``topic`` from the beginning, until ``idle_s`` pass without a new message.

    Partitions are assigned (no consumer group, nothing committed), so reading
    for training never moves the stream workers' offsets. Invalid messages are
    counted and skipped; the last version of a post id wins.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError
    from pydantic import ValidationError

    from crossfeed.core.kafka import KafkaConnection

    try:
        consumer = KafkaConsumer(
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **KafkaConnection(settings.kafka).kafka_python(),
        )
    except KafkaError as exc:
        raise TrainingError(f"cannot reach Kafka at {settings.kafka.bootstrap}: {exc}") from exc
    posts: dict[str, Post] = {}
    invalid = 0
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TrainingError(f"Kafka topic {topic!r} does not exist or has no partitions")
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        last = time.monotonic()
        while len(posts) < max_posts and time.monotonic() - last < idle_s:
            for batch in consumer.poll(timeout_ms=500).values():
                last = time.monotonic()
                for record in batch:
                    try:
                        post = Post.model_validate_json(record.value or b"")
                    except ValidationError:
                        invalid += 1
                        continue
                    posts[post.id] = post
    finally:
        consumer.close()
    if invalid:
        log.warning("skipped %d invalid messages on %s", invalid, topic)
    log.info("read %d posts from %s", len(posts), topic)
    return list(posts.values())[:max_posts]
