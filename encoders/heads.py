"""Projection heads into the shared space, stored and loaded by version.

A version is a directory ``<models_dir>/<version>/`` holding ``heads.safetensors``
(the weights of one small head per modality) and ``config.json`` (version id,
creation time, head kinds and dims, training-data hash, metrics, notes, and the
weights' SHA-256). Videos use the image head on mean-pooled frame features.

Every vector in the index records the version that produced it, so versions
are immutable: saving never overwrites, and a new fit is a new version.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from crossfeed.encoders.base import l2_normalize
from crossfeed.encoders.exceptions import HeadVersionError

if TYPE_CHECKING:
    from crossfeed.encoders.vocab import TagVocab

log = logging.getLogger(__name__)

HeadKind = Literal["identity", "linear", "mlp", "tag_posterior"]
HEAD_KINDS: tuple[str, ...] = ("identity", "linear", "mlp", "tag_posterior")
MODALITY_HEADS: dict[str, str] = {"text": "text", "image": "image", "video": "image"}
FALLBACK_VERSION = "untrained-v0"
FALLBACK_SEED = 20_240_601
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "heads.safetensors"
FORMAT = 1
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def validate_version(version: str) -> str:
    """A version id is also a directory name: refuse anything path-like."""
    if not isinstance(version, str) or not _VERSION_RE.match(version) or ".." in version:
        raise HeadVersionError(
            f"invalid head version {version!r}: "
            "use 1-100 of [A-Za-z0-9._-], not starting with . or -"
        )
    return version


@dataclass(frozen=True)
class HeadSpec:
    """Shape of one head: ``identity`` (in = out), ``linear``, ``mlp`` (one hidden layer), or
    ``tag_posterior`` (linear, or one hidden layer when ``hidden`` is set, then a sigmoid:
    ``out_dim`` tag probabilities, see :class:`TagPosteriorNet`)."""

    kind: str
    in_dim: int
    out_dim: int
    hidden: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise HeadVersionError(f"unknown head kind {self.kind!r}; expected one of {HEAD_KINDS}")
        if self.in_dim < 1 or self.out_dim < 1:
            raise HeadVersionError(f"head dims must be positive, got {self.in_dim}->{self.out_dim}")
        if self.kind == "identity" and self.in_dim != self.out_dim:
            raise HeadVersionError("an identity head needs in_dim == out_dim")
        if self.kind == "mlp" and (self.hidden is None or self.hidden < 1):
            raise HeadVersionError("an mlp head needs a positive hidden size")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "in_dim": self.in_dim, "out_dim": self.out_dim}
        if self.hidden is not None:
            out["hidden"] = self.hidden
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HeadSpec:
        try:
            hidden = data.get("hidden")
            return cls(
                kind=str(data["kind"]),
                in_dim=int(data["in_dim"]),
                out_dim=int(data["out_dim"]),
                hidden=None if hidden is None else int(hidden),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise HeadVersionError(f"malformed head spec {dict(data)!r}: {exc}") from exc


class TagPosteriorNet(nn.Module):
    """Tag logits -> probabilities, centred, each block unit-normalised and weighted.

    The output dims are tags (and optionally tag topics), in blocks: ``block[j]``
    says which block dim ``j`` belongs to and ``weight[j]`` that block's weight,
    so the cosine of two outputs is the weighted sum of per-block cosines.
    Subtracting ``center`` (the mean training posterior) first removes what
    every item shares (the frequent tags), which would otherwise make a few
    items hubs near every query. All three are buffers saved with the weights;
    the defaults (one block, weight 1, centre 0) give plain posteriors.
    :meth:`posterior` returns the probabilities themselves.
    """

    center: torch.Tensor
    block: torch.Tensor
    weight: torch.Tensor

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.logits: nn.Module
        if spec.hidden is None:
            self.logits = nn.Linear(spec.in_dim, spec.out_dim)
        else:
            self.logits = nn.Sequential(
                nn.Linear(spec.in_dim, spec.hidden), nn.GELU(), nn.Linear(spec.hidden, spec.out_dim)
            )
        self.register_buffer("center", torch.zeros(spec.out_dim))
        self.register_buffer("block", torch.zeros(spec.out_dim, dtype=torch.long))
        self.register_buffer("weight", torch.ones(spec.out_dim))

    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_logits(self.logits(x))

    def from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        z = torch.sigmoid(logits) - self.center  # (n, out)
        squares = torch.zeros_like(z).index_add_(1, self.block, z * z)  # (n, out): per block
        norms = squares.sqrt().clamp_min(1e-12).index_select(1, self.block)
        return z / norms * self.weight.sqrt()


class ProjectionHead(nn.Module):
    """Maps one tower's features into the shared space (normalisation happens after)."""

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.net: nn.Module
        if spec.kind == "identity":
            self.net = nn.Identity()
        elif spec.kind == "linear":
            self.net = nn.Linear(spec.in_dim, spec.out_dim)
        elif spec.kind == "tag_posterior":
            self.net = TagPosteriorNet(spec)
        else:
            assert spec.hidden is not None
            self.net = nn.Sequential(
                nn.Linear(spec.in_dim, spec.hidden),
                nn.GELU(),
                nn.Linear(spec.hidden, spec.out_dim),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @classmethod
    def linear_from_numpy(
        cls, weight: np.ndarray, bias: np.ndarray | None = None
    ) -> ProjectionHead:
        """A linear head computing ``x @ weight + bias`` (weight: (in_dim, out_dim))."""
        in_dim, out_dim = weight.shape
        head = cls(HeadSpec("linear", int(in_dim), int(out_dim)))
        linear = head.net
        assert isinstance(linear, nn.Linear)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.T, dtype=np.float32)))
            if bias is None:
                linear.bias.zero_()
            else:
                linear.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)))
        return head


@dataclass
class HeadSet:
    """One loaded version: a head per modality plus its config."""

    version: str
    created_at: datetime
    heads: dict[str, ProjectionHead]
    config: dict[str, Any] = field(default_factory=dict)
    # The tag vocabulary saved with a tag-space version (its outputs are the tags, then
    # one per tag topic); None for other kinds of heads. See :meth:`tag_posteriors`.
    tag_vocab: TagVocab | None = None

    @property
    def dim(self) -> int:
        return self.heads["text"].spec.out_dim

    @property
    def is_fallback(self) -> bool:
        return self.version == FALLBACK_VERSION

    def head_for(self, modality: str) -> ProjectionHead:
        try:
            return self.heads[MODALITY_HEADS[modality]]
        except KeyError as exc:
            raise HeadVersionError(f"version {self.version} has no head for {modality!r}") from exc

    def to(self, device: str) -> HeadSet:
        for head in self.heads.values():
            head.to(device).eval()
        return self

    def project(self, modality: str, features: np.ndarray, device: str = "cpu") -> np.ndarray:
        """(n, in_dim) tower features -> (n, dim) L2-normalised float32 shared-space vectors."""
        head = self.head_for(modality)
        feats = np.asarray(features, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != head.spec.in_dim:
            raise HeadVersionError(
                f"version {self.version}: {modality} head expects {head.spec.in_dim}-d features, "
                f"got shape {feats.shape} (head fitted on another tower?)"
            )
        if feats.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            out = head(torch.from_numpy(feats).to(device)).float().cpu().numpy()
        return l2_normalize(out)

    def tag_head(self, modality: str) -> ProjectionHead | None:
        """The head for ``modality`` when it is a tag space whose saved vocabulary matches its
        outputs (the vocabulary's tags, then one per tag topic); else None."""
        head = self.heads.get(MODALITY_HEADS.get(modality, ""))
        vocab = self.tag_vocab
        if head is None or vocab is None or head.spec.kind != "tag_posterior":
            return None
        if len(vocab) + vocab.n_topics != head.spec.out_dim:
            return None
        return head

    def tag_posteriors(
        self, modality: str, features: np.ndarray, device: str = "cpu"
    ) -> list[dict[str, float]] | None:
        """(n, in_dim) tower features -> each item's ``{tag: p(tag)}`` from a tag-space head,
        or None (computing nothing) when this version has no usable tag head."""
        head = self.tag_head(modality)
        if head is None or self.tag_vocab is None or not isinstance(head.net, TagPosteriorNet):
            return None
        tags = self.tag_vocab.tags
        feats = torch.from_numpy(np.asarray(features, dtype=np.float32)).to(device)
        with torch.inference_mode():
            probs = head.net.posterior(feats).float().cpu().numpy()  # (n, out_dim)
        return [dict(zip(tags, row[: len(tags)].tolist(), strict=True)) for row in probs]
