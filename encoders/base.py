"""The encoder interface: text, images and videos into one shared space.

Implementations return L2-normalised float32 arrays of shape ``(n, dim)`` so that
the inner product is the cosine similarity, and carry the ``version`` of the
projection heads that produced them (every stored vector records it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from crossfeed.exceptions import InvalidInputError


class Embedder(ABC):
    """Maps every modality into one shared space of ``dim`` dimensions."""

    version: str
    dim: int

    @abstractmethod
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) strings -> (n, dim) unit vectors."""

    @abstractmethod
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n,) decoded RGB(A) images -> (n, dim) unit vectors."""

    @abstractmethod
    def embed_videos(self, videos: Sequence[Sequence[Image.Image]]) -> np.ndarray:
        """(n,) lists of decoded frames -> (n, dim) unit vectors (frames pooled)."""

    def embed_video_moments(
        self, frames: Sequence[Image.Image], groups: Sequence[Sequence[int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """One video's pooled vector ``(dim,)`` and one vector per group of frame
        indices ``(len(groups), dim)``, each pooled like :meth:`embed_videos`.

        This default embeds every clip separately; implementations with a frame
        tower override it to run the tower once per frame.
        """
        clips = [list(frames)] + [[frames[i] for i in group] for group in groups]
        out = np.asarray(self.embed_videos(clips), dtype=np.float32)
        return out[0], out[1:]

    def embed_media_with_posterior(
        self, modality: str, media: Sequence[Image.Image] | Sequence[Sequence[Image.Image]]
    ) -> tuple[np.ndarray, list[dict[str, float]] | None]:
        """Images (``modality="image"``) or videos (frame lists) -> ``(n, dim)`` vectors and,
        when the serving head is a tag space, each item's ``{tag: p(tag)}`` (else None).

        This default has no tag head: vectors only. Implementations with one compute the
        tower features once for both.
        """
        return self._embed_media(modality, media), None

    def media_posteriors(
        self, modality: str, media: Sequence[Image.Image] | Sequence[Sequence[Image.Image]]
    ) -> list[dict[str, float]] | None:
        """Only the tag posteriors of :meth:`embed_media_with_posterior` (None without a tag
        head, computing nothing)."""
        _check_media_modality(modality)
        return None

    def _embed_media(self, modality: str, media: Sequence[Any]) -> np.ndarray:
        _check_media_modality(modality)
        fn = self.embed_images if modality == "image" else self.embed_videos
        return np.asarray(fn(media), dtype=np.float32)


def _check_media_modality(modality: str) -> None:
    if modality not in ("image", "video"):
        raise InvalidInputError(f"expected modality image or video, got {modality!r}")


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise unit vectors as float32, as every Embedder returns (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)
