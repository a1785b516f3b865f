"""A tiny deterministic :class:`Embedder` for unit tests of other packages.

No model, no torch: texts are feature-hashed bags of words (posts sharing words
get similar vectors), images are a fixed random projection of a 4x4 colour
thumbnail (similar pictures get similar vectors). Same input, same vector, in
every process.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from crossfeed.encoders.base import Embedder, l2_normalize
from crossfeed.encoders.exceptions import MediaDecodeError
from crossfeed.encoders.media import to_rgb

_TOKEN_RE = re.compile(r"[#@]?\w+", re.UNICODE)
_THUMB = 4


class HashingEmbedder(Embedder):
    """Deterministic fake embedder: ``dim``-d unit vectors, ``version`` "hashing-v0"."""

    def __init__(self, dim: int = 64, version: str = "hashing-v0", seed: int = 0) -> None:
        if dim < 2:
            raise ValueError("dim must be >= 2")
        self.dim = dim
        self.version = version
        rng = np.random.default_rng(seed)
        self._image_proj = rng.standard_normal((_THUMB * _THUMB * 3, dim)).astype(np.float32)
        self.calls: dict[str, int] = {"text": 0, "image": 0, "video": 0}

    def _token_vector(self, token: str) -> np.ndarray:
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=16).digest()
        rng = np.random.default_rng(int.from_bytes(digest, "little"))
        return rng.standard_normal(self.dim).astype(np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.calls["text"] += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            tokens = _TOKEN_RE.findall(text.lower()) or [""]
            for token in tokens:
                out[i] += self._token_vector(token)
        return l2_normalize(out)

    def _image_stats(self, image: Image.Image) -> np.ndarray:
        thumb = to_rgb(image).resize((_THUMB, _THUMB), Image.Resampling.BOX)
        arr = np.asarray(thumb, dtype=np.float32).reshape(-1) / 255.0
        # Centre on mid-grey, plus a small constant so a flat grey image is not zero.
        return arr - 0.5 + 1e-3

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.calls["image"] += len(images)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        stats = np.stack([self._image_stats(im) for im in images])
        return l2_normalize(stats @ self._image_proj)

    def embed_video_frames(self, frames: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_images(frames)

    def embed_videos(self, videos: Sequence[Sequence[Image.Image]]) -> np.ndarray:
        self.calls["video"] += len(videos)
        out = np.zeros((len(videos), self.dim), dtype=np.float32)
        for i, frames in enumerate(videos):
            if not frames:
                raise MediaDecodeError("a video has no frames to embed")
            out[i] = self.embed_images(frames).mean(axis=0)
        return l2_normalize(out)
