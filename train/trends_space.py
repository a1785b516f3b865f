"""The eval's space with a fitted head: a tag-posterior text head on a carve-out.

A deployment serves a fitted head version, and the stream step feeds the tracker the
text row that version produces (:func:`crossfeed.streams.trends.observations_from_rows`).
``crossfeed eval trends --space tag-head`` does the same with a head it fits itself,
so the tracker is the same code on the same kind of input:

- **head**: a text head of the tag-posterior kind (:class:`TagPosteriorNet`: MiniLM
  features -> one hidden layer -> ``p(tag)`` over the tag vocabulary, centred on the
  mean training posterior, unit-normalised), the recipe of the tag space that gave the
  best retrieval (README, "Learning the shared space"), text tower only;
- **carve-out** (no leakage): fitted on the background items *except* the posts the
  meaning events were made from (their pictures, subjects and captions); the
  paraphrases are never seen. The vocabulary is fitted on the same rows. Early
  stopping on text-to-text retrieval mAP ("shares a tag") of a seeded 15% carve-out
  of those rows;
- **deterministic**: one seed, one thread for the fit, the projected rows cached per
  corpus key and config (``vectors-<key>.npy`` beside the text rows).

The background items are fitting rows: like a deployment's head fitted on the feed's
history, it has seen posts like the background, never the bursts'.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from crossfeed.encoders.heads import HeadSpec, ProjectionHead, TagPosteriorNet
from crossfeed.encoders.vocab import TagVocab
from crossfeed.train.heads_trainer import fit_early_stopping
from crossfeed.train.losses import supervised_tag_loss
from crossfeed.train.tag_space import TagSpaceConfig, carve_validation, retrieval_map
from crossfeed.train.trends_data import EvalCorpus

log = logging.getLogger(__name__)

Space = Literal["untrained", "tag-head"]
SPACES: tuple[Space, ...] = ("untrained", "tag-head")
RECIPE = 2  # bump when the fit changes: the cached rows are keyed by it


_TAG_SPACE = TagSpaceConfig()


@dataclass(frozen=True)
class TextHeadConfig:
    """The tag space's defaults (``TagSpaceConfig``, read from it), for the text head alone."""

    hidden: int | None = _TAG_SPACE.text_hidden
    dropout: float = _TAG_SPACE.dropout
    epochs: int = _TAG_SPACE.epochs
    batch_size: int = _TAG_SPACE.batch_size
    lr: float = _TAG_SPACE.lr
    weight_decay: float = _TAG_SPACE.weight_decay
    val_fraction: float = _TAG_SPACE.val_fraction
    patience: int = _TAG_SPACE.patience
    smoothing: float = _TAG_SPACE.smoothing
    seed: int = _TAG_SPACE.seed


class _Model(nn.Module):
    def __init__(self, head: ProjectionHead, dropout: float) -> None:
        super().__init__()
        self.head = head
        self.drop = nn.Dropout(dropout)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        net = self.head.net
        assert isinstance(net, TagPosteriorNet)
        return net.logits(self.drop(x))  # type: ignore[no-any-return]


def fit_text_head(
    features: np.ndarray, tag_lists: Sequence[Sequence[str]], cfg: TextHeadConfig
) -> tuple[ProjectionHead, TagVocab]:
    """A tag-posterior head for raw ``features`` (n, d), fitted to predict ``tag_lists``."""
    x = np.asarray(features, dtype=np.float32)
    vocab = TagVocab().fit(tag_lists)
    y = vocab.transform(tag_lists)
    tr_idx, val_idx = carve_validation([str(i) for i in range(len(x))], cfg.val_fraction, cfg.seed)
    mean, std = x[tr_idx].mean(0), x[tr_idx].std(0) + 1e-6
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same seed gives the same head
    try:
        torch.manual_seed(cfg.seed)
        head = ProjectionHead(HeadSpec("tag_posterior", x.shape[1], len(vocab), cfg.hidden))
        model = _Model(head, cfg.dropout)
        tx = torch.from_numpy((x - mean) / std)
        ty = torch.from_numpy(y)

        def batch_loss(b: torch.Tensor) -> torch.Tensor:
            return supervised_tag_loss(model.logits(tx[b]), ty[b], smoothing=cfg.smoothing)

        def validate(vb: torch.Tensor) -> dict[str, float]:
            with torch.inference_mode():
                logits = model.logits(tx[vb])
                loss = float(supervised_tag_loss(logits, ty[vb], smoothing=cfg.smoothing))
                net = head.net
                assert isinstance(net, TagPosteriorNet)
                e = torch.nn.functional.normalize(net.from_logits(logits), dim=1).numpy()
            # text -> text retrieval, "shares a tag" as relevance (as the tag space does)
            return {"val_loss": loss, "val_map": retrieval_map(e, e, y[vb.numpy()])}

        history, best_epoch, _ = fit_early_stopping(
            model,
            batch_loss,
            validate,
            tr_idx=tr_idx,
            val_idx=val_idx,
            rng=np.random.default_rng(cfg.seed),
            cfg=cfg,
            desc="trends text head",
            progress=False,
        )
        net = head.net
        assert isinstance(net, TagPosteriorNet)
        first = net.logits[0]  # type: ignore[index]
        with torch.no_grad():  # fold the standardisation: the head takes raw features
            w = first.weight / torch.from_numpy(std)[None, :]
            first.bias.sub_(w @ torch.from_numpy(mean))
            first.weight.copy_(w)
            net.center.copy_(net.posterior(torch.from_numpy(x[tr_idx])).mean(0))
    finally:
        torch.set_num_threads(threads)
    head.eval()
    log.info("trends text head: %d tags, best epoch %d of %d", len(vocab), best_epoch, len(history))
    return head, vocab


def project(head: ProjectionHead, features: np.ndarray) -> np.ndarray:
    """Raw features -> unit rows of the head's space (as ``HeadSet.project`` does)."""
    with torch.inference_mode():
        out = head(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32)


def fitting_rows(corpus: EvalCorpus) -> list[int]:
    """The background items a head may be fitted on: all but the events' sources."""
    held = set(corpus.event_source)
    return [it.row for i, it in enumerate(corpus.items) if i not in held]


def with_tag_head(
    corpus: EvalCorpus, cache_dir: Path | None, cfg: TextHeadConfig | None = None
) -> EvalCorpus:
    """``corpus`` with every row (items and paraphrases) in a fitted head's space."""
    cfg = cfg or TextHeadConfig()
    if not corpus.event_source:
        raise ValueError("the corpus does not say which items the events came from")
    blob = json.dumps({**asdict(cfg), "recipe": RECIPE}, sort_keys=True).encode()
    key = f"{corpus.key}-taghead-{hashlib.sha256(blob).hexdigest()[:8]}"
    path = None if cache_dir is None else cache_dir / f"vectors-{key}.npy"
    if path is not None and path.exists():
        log.info("tag-head rows from the cache %s", path)
        return replace(corpus, vectors=np.load(path), key=key)
    rows = fitting_rows(corpus)
    tags = [corpus.items[r].hashtags for r in rows]  # items come first: row == index
    head, _ = fit_text_head(corpus.vectors[rows], tags, cfg)
    vectors = project(head, corpus.vectors)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
    return replace(corpus, vectors=vectors, key=key)
