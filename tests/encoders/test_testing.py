"""The deterministic fake embedder other packages test with."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from crossfeed.encoders.base import Embedder
from crossfeed.encoders.exceptions import MediaDecodeError
from crossfeed.encoders.testing import HashingEmbedder


def test_hashing_embedder_is_deterministic_and_normalised() -> None:
    a, b = HashingEmbedder(dim=32), HashingEmbedder(dim=32)
    assert isinstance(a, Embedder) and a.dim == 32 and a.version == "hashing-v0"
    texts = ["Cats and #dogs", "cats and dogs!", "quarterly earnings report", ""]
    va, vb = a.embed_texts(texts), b.embed_texts(texts)
    np.testing.assert_array_equal(va, vb)
    assert va.dtype == np.float32 and va.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(va, axis=1), 1.0, rtol=1e-5)
    assert va[0] @ va[1] > va[0] @ va[2]


def test_hashing_embedder_images_and_videos() -> None:
    emb = HashingEmbedder(dim=16)
    red, red2 = Image.new("RGB", (20, 20), (250, 0, 0)), Image.new("RGB", (50, 30), (240, 10, 0))
    blue = Image.new("RGBA", (20, 20), (0, 0, 250, 255))
    v = emb.embed_images([red, red2, blue])
    assert v.shape == (3, 16)
    assert v[0] @ v[1] > v[0] @ v[2]
    np.testing.assert_array_equal(v, emb.embed_images([red, red2, blue]))
    video = emb.embed_videos([[red, red2], [blue]])
    np.testing.assert_allclose(video[1], v[2], atol=1e-6)
    assert emb.embed_video_frames([red, blue]).shape == (2, 16)
    assert emb.embed_images([]).shape == (0, 16)
    with pytest.raises(MediaDecodeError):
        emb.embed_videos([[]])
