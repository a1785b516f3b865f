"""``crossfeed train``: fit projection heads over the frozen towers from tagged posts.

Posts come from a JSONL file (``--posts``) or are read back from the raw Kafka
topic (``--from-kafka``). Every (media, text) pair becomes a training row: the
media's tower features, the tower features of the text the stream embeds for
the post (clean text plus hashtags) and the post's normalised hashtags, which
are the only supervision (see :mod:`crossfeed.train.tags`).

Two kinds of space:

* ``--space tags`` (default): tag-posterior heads
  (:mod:`crossfeed.train.tag_space`), the space that won the clipart
  evaluation;
* ``--space embedding``: an MLP embedding with a shared tag classifier
  (:mod:`crossfeed.train.heads_trainer`).

``--objective`` picks and combines objectives (``bce`` = noise-robust
multi-label tag loss, ``infonce``, ``pairwise``, ``rank`` = the survey's eq. 2
with hardest negatives), ``--weights`` weighs them. A validation carve-out of
the training posts drives early stopping. The result is a new immutable head
version (safetensors + ``config.json`` with the data hash and metrics, plus
``tags.json``) that stream workers load as "latest", and a PNG of the loss
and validation curves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossfeed.encoders.exceptions import TrainingError
from crossfeed.exceptions import InvalidInputError
from crossfeed.train.train_data import (
    TrainingData,
    load_training_pairs,
    read_posts_from_kafka,
)

if TYPE_CHECKING:
    from torch import nn

    from crossfeed.encoders.vocab import TagVocab

log = logging.getLogger(__name__)

OBJECTIVE_NAMES: tuple[str, ...] = ("bce", "infonce", "pairwise", "rank")
MAX_KAFKA_POSTS = 1_000_000


def parse_objectives(names: str, weights: str | None) -> dict[str, float]:
    """``"bce,rank"`` and ``"1,0.5"`` -> ``{"bce": 1.0, "rank": 0.5}`` (weights default 1)."""
    chosen = [n.strip().lower() for n in names.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(OBJECTIVE_NAMES))
    if not chosen or unknown:
        raise InvalidInputError(f"objectives must be some of {OBJECTIVE_NAMES}, got {names!r}")
    if len(set(chosen)) != len(chosen):
        raise InvalidInputError(f"objective listed twice in {names!r}")
    values = [1.0] * len(chosen)
    if weights:
        try:
            values = [float(w) for w in weights.split(",")]
        except ValueError as exc:
            raise InvalidInputError(f"weights must be numbers, got {weights!r}") from exc
        if len(values) != len(chosen) or any(not np.isfinite(w) or w <= 0 for w in values):
            raise InvalidInputError("give one positive weight per objective")
    return dict(zip(chosen, values, strict=True))


@dataclass
class TrainedSpace:
    """Heads of either kind, ready to save, with what the record should say."""

    heads: dict[str, nn.Module]
    space: str
    summary: dict[str, Any]
    history: list[dict[str, float]]


def train_space(
    data: TrainingData,
    vocab: TagVocab,
    *,
    space: str = "tags",
    objectives: dict[str, float] | None = None,
    seed: int = 0,
    epochs: int | None = None,
    progress: bool = True,
    plot_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    topics: float = 0.0,
) -> TrainedSpace:
    """Train heads of ``space`` ("tags" or "embedding") on ``data`` labelled by ``vocab``.

    ``topics`` > 0 (tag space only) is the subsumption threshold that groups
    the vocabulary into tag topics (:meth:`TagVocab.fit_topics`, stored on
    ``vocab`` so it is saved with the heads); a topic block is then trained
    next to the tags. 0 = no topics.
    """
    objectives = objectives or {"bce": 1.0}
    y = vocab.transform(data.tags)
    extra = dict(overrides or {})
    if epochs is not None:
        extra["epochs"] = epochs
    default_batch = 256 if space == "tags" else 128
    if "batch_size" not in extra and len(data) < 4 * default_batch:
        extra["batch_size"] = max(2, len(data) // 4)  # small data: still several steps per epoch
    if space == "tags":
        from crossfeed.train.tag_space import TagSpaceConfig, train_tag_space

        if topics > 0:
            vocab.fit_topics(y, topics)
        else:
            vocab.topics, vocab.topic_names = None, []
        cfg = TagSpaceConfig(
            seed=seed,
            supervised=objectives.get("bce", 0.0),
            infonce=objectives.get("infonce", 0.0),
            pairwise=objectives.get("pairwise", 0.0),
            rank=objectives.get("rank", 0.0),
            **extra,
        )
        result = train_tag_space(
            data.image,
            data.text,
            y,
            cfg,
            topics=vocab.topic_targets(y) if vocab.topics is not None else None,
            groups=data.post_ids,
            progress=progress,
            plot_path=plot_path,
        )
        heads: dict[str, nn.Module] = dict(result.heads)
        return TrainedSpace(heads, space, result.summary(), result.history)
    if space == "embedding":
        from crossfeed.train.heads_trainer import (
            HeadsConfig,
            history_summary,
            train_heads,
        )
        from crossfeed.train.losses import ObjectiveConfig

        obj = ObjectiveConfig(
            supervised=objectives.get("bce", 0.0),
            infonce=objectives.get("infonce", 0.0),
            pairwise=objectives.get("pairwise", 0.0),
            rank=objectives.get("rank", 0.0),
        )
        trained = train_heads(
            data.image,
            data.text,
            y,
            HeadsConfig(seed=seed, objectives=obj, **extra),
            progress=progress,
            plot_path=plot_path,
        )
        summary = {"space": "embedding", **history_summary(trained)}
        return TrainedSpace(dict(trained.heads), space, summary, trained.history)
    raise InvalidInputError(f"space must be 'tags' or 'embedding', got {space!r}")


# Subsumption thresholds tried (0 = no topic block): loose (few broad topics)
# and stricter; at 0.7 most tags are their own topic and the block adds nothing.
TOPIC_CANDIDATES: tuple[float, ...] = (0.0, 0.3, 0.5)


def choose_topics(
    data: TrainingData,
    vocab: TagVocab,
    *,
    candidates: Sequence[float] = TOPIC_CANDIDATES,
    objectives: dict[str, float] | None = None,
    seed: int = 0,
    epochs: int | None = None,
    progress: bool = True,
) -> tuple[float, dict[float, float], TrainedSpace]:
    """Pick the topic threshold by the validation mAP of the carve-out (inside train).

    Every candidate trains with the same seed, hence the same carve-out, so the
    scores compare; relevance is "shares a tag", never a category label.
    Returns the choice, every score, and the chosen model (``vocab`` is left
    with the chosen topics).
    """
    scores: dict[float, float] = {}
    models: dict[float, tuple[TrainedSpace, list[int] | None, list[str]]] = {}
    for k in candidates:
        trained = train_space(
            data,
            vocab,
            objectives=objectives,
            seed=seed,
            epochs=epochs,
            progress=progress,
            topics=k,
        )
        scores[k] = float(trained.summary["best_validation_map"])
        models[k] = (trained, vocab.topics, vocab.topic_names)
        log.info(
            "topic threshold %.2f: %d topics, validation mAP %.4f", k, vocab.n_topics, scores[k]
        )
    best = max(scores, key=lambda k: (scores[k], -k))
    _, vocab.topics, vocab.topic_names = models[best]
    return best, scores, models[best][0]


def save_trained(
    models_dir: Path,
    trained: TrainedSpace,
    vocab: TagVocab,
    *,
    data_hash: str,
    towers: dict[str, str],
    metrics: dict[str, Any] | None = None,
    version: str | None = None,
    notes: str = "",
) -> str:
    """Write a new head version with its tag vocabulary; returns the version id."""
    from crossfeed.encoders.heads import ProjectionHead
    from crossfeed.encoders.versions import new_version_id, save_heads, save_vocab_for_version

    heads = {k: v for k, v in trained.heads.items() if isinstance(v, ProjectionHead)}
    vocab_hash = hashlib.sha256("\n".join(vocab.tags).encode()).hexdigest()[:16]
    saved = save_heads(
        models_dir,
        heads,
        version=version or new_version_id(f"{trained.space}-heads"),
        data_hash=f"{data_hash}:{vocab_hash}",
        metrics={**trained.summary, "n_tags": len(vocab), **(metrics or {})},
        notes=notes or f"{trained.space} heads trained on noisy hashtags",
        towers=towers,
    )
    save_vocab_for_version(models_dir, saved, vocab)
    return saved


# ---------------------------------------------------------------------- command


def add_train_command(sub: argparse._SubParsersAction) -> None:
    """Register ``crossfeed train``."""
    p = sub.add_parser("train", help="train projection heads on tagged posts")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--posts", type=Path, help="JSONL file of posts")
    src.add_argument("--from-kafka", action="store_true", help="read posts back from Kafka")
    p.add_argument("--topic", default=None, help="topic for --from-kafka (default posts.raw)")
    p.add_argument("--max-posts", type=int, default=100_000, help="cap for --from-kafka")
    p.add_argument("--space", choices=("tags", "embedding"), default="tags")
    p.add_argument("--objective", default="bce", help=f"comma list of {', '.join(OBJECTIVE_NAMES)}")
    p.add_argument("--weights", default=None, help="comma list, one weight per objective")
    p.add_argument("--epochs", type=int, default=None, help="max epochs (early stopping applies)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-tag-count", type=int, default=3, help="tag frequency floor")
    p.add_argument("--max-tags", type=int, default=512, help="vocabulary cap")
    p.add_argument(
        "--topics",
        default="auto",
        help="tag-topic subsumption threshold in (0, 1], 0 = no topics, "
        "or 'auto' (chosen on the validation carve-out)",
    )
    p.add_argument("--version", default=None, help="version id (default: generated)")
    p.add_argument("--plot", type=Path, default=None, help="PNG of the curves")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from crossfeed.core.settings import Settings
    from crossfeed.corpus.io import read_posts, write_posts
    from crossfeed.encoders.model import load_embedder
    from crossfeed.encoders.vocab import TagVocab, TagVocabConfig

    settings = Settings()
    progress = not args.no_progress and sys.stderr.isatty()
    objectives = parse_objectives(args.objective, args.weights)
    if args.from_kafka:
        if not 1 <= args.max_posts <= MAX_KAFKA_POSTS:
            raise InvalidInputError(f"--max-posts must be in 1..{MAX_KAFKA_POSTS}")
        topic = args.topic or settings.kafka.topic_raw
        posts = read_posts_from_kafka(settings, topic, max_posts=args.max_posts)
        if not posts:
            raise TrainingError(f"no posts on Kafka topic {topic!r}")
        posts_path = settings.state.state_dir / "train" / "kafka-posts.jsonl"
        posts_path.parent.mkdir(parents=True, exist_ok=True)
        write_posts(posts, posts_path)
    else:
        posts_path = args.posts
        if not posts_path.is_file():
            raise InvalidInputError(f"no such posts file: {posts_path}")
        posts = list(read_posts(posts_path))
    embedder = load_embedder(settings)
    getattr(embedder, "device", None)  # sets torch's CPU threads even if no tower loads
    started = time.monotonic()
    data = load_training_pairs(
        posts_path, posts, embedder, settings.stream.media_roots, progress=progress
    )
    vocab = TagVocab(TagVocabConfig(min_count=args.min_tag_count, max_size=args.max_tags))
    vocab.fit(data.tags)
    plot = args.plot or settings.state.state_dir / "train" / "curves.png"
    topics = parse_topics(args.topics)
    topic_scores: dict[float, float] = {}
    if args.space == "tags" and topics is None:
        topics, topic_scores, _ = choose_topics(
            data,
            vocab,
            objectives=objectives,
            seed=args.seed,
            epochs=args.epochs,
            progress=progress,
        )
    trained = train_space(
        data,
        vocab,
        space=args.space,
        objectives=objectives,
        seed=args.seed,
        epochs=args.epochs,
        progress=progress,
        plot_path=plot,
        topics=topics or 0,
    )
    version = save_trained(
        settings.models_dir,
        trained,
        vocab,
        data_hash=data.data_hash,
        towers={"text": embedder.text_tower.model_id, "image": embedder.image_tower.model_id},
        metrics={
            "n_pairs": len(data),
            "skipped": data.skipped,
            "objective_weights": objectives,
            "topic_validation_map": topic_scores,
        },
        version=args.version,
    )
    report = {
        "version": version,
        "models_dir": str(settings.models_dir),
        "pairs": len(data),
        "tags": len(vocab),
        "topics": vocab.n_topics,
        "seconds": round(time.monotonic() - started, 1),
        "plot": str(plot),
        **{k: trained.summary[k] for k in ("space", "objectives", "best_epoch", "epochs_run")},
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0


def parse_topics(value: str) -> float | None:
    """``"auto"`` -> None (choose on validation); else a threshold in [0, 1] (0 = none)."""
    if value.strip().lower() == "auto":
        return None
    try:
        topics = float(value)
    except ValueError as exc:
        raise InvalidInputError(f"--topics must be a number or 'auto', got {value!r}") from exc
    if not 0.0 <= topics <= 1.0:
        raise InvalidInputError("--topics must be between 0 and 1")
    return topics
