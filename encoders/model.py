"""The production embedder: text and image towers plus versioned projection heads.

Towers and heads load lazily, once, under a lock: a worker can construct the
embedder at startup for free and pay the model load on the first batch (or call
:meth:`SharedSpaceEmbedder.load` to pay it up front). Inference runs batched
under ``torch.inference_mode()`` on CUDA when present; on the CPU the towers run
as ONNX Runtime graphs when it is installed (``CROSSFEED_ENCODER_RUNTIME``,
:mod:`.runtime`), falling back to torch with a logged reason when that fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from crossfeed.encoders.base import Embedder
from crossfeed.encoders.exceptions import MediaDecodeError, ModelLoadError
from crossfeed.encoders.heads import HeadSet
from crossfeed.encoders.media import VideoSource, decode_image, decode_video
from crossfeed.encoders.runtime import (
    EXPORT_RECIPE,
    RuntimeChoice,
    cache_dir_for,
    choose_runtime,
    cpu_thread_count,
)
from crossfeed.encoders.versions import load_heads
from crossfeed.exceptions import ConfigError, InvalidInputError

if TYPE_CHECKING:
    from crossfeed.core.settings import EncoderSettings, Settings
    from crossfeed.encoders.image import ImageTower
    from crossfeed.encoders.onnx_towers import OnnxImageTower, OnnxTextTower
    from crossfeed.encoders.text import TextTower

    AnyTextTower = TextTower | OnnxTextTower
    AnyImageTower = ImageTower | OnnxImageTower

log = logging.getLogger(__name__)

# Text/image dims of the default towers, used to size the fallback head without
# loading a tower just to ask.
_DEFAULT_TEXT_DIM = 384
_DEFAULT_IMAGE_DIM = 1280


def resolve_device(setting: str) -> str:
    """ "auto" -> "cuda" when available else "cpu"; "cpu"/"cuda"/"cuda:N" are checked."""
    import torch

    value = (setting or "auto").strip().lower()
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "cpu":
        return "cpu"
    if value == "cuda" or (value.startswith("cuda:") and value[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"CROSSFEED_DEVICE={setting!r} but no CUDA device is available")
        return value
    raise ConfigError(f"CROSSFEED_DEVICE must be auto, cpu, cuda or cuda:N, not {setting!r}")


def apply_cpu_threads(setting: int) -> int:
    """Set torch's intra-op threads: ``setting`` > 0 as given, 0 = half the cores.

    Measured on a 2-core machine shared with Milvus and the API: EfficientNet-Lite0
    took 330 ms/image with 2 threads and 74 ms with 1 (OpenMP threads spin against
    the other processes), so the default leaves the other half of the cores alone.
    """
    import torch

    threads = cpu_thread_count(setting)
    torch.set_num_threads(threads)
    return threads


class SharedSpaceEmbedder(Embedder):
    """Texts, images and videos into one space, via towers + a head version.

    Outputs are L2-normalised float32 ``(n, dim)`` arrays. ``version`` is the
    head version every produced vector must be stored with.
    """

    def __init__(
        self, settings: EncoderSettings, models_dir: Path, *, batch_size: int = 32
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.settings = settings
        self.models_dir = Path(models_dir)
        self.batch_size = batch_size
        self._lock = threading.RLock()
        self._device: str | None = None
        self._runtime_ready = False
        self._runtime: RuntimeChoice | None = None
        self._text: AnyTextTower | None = None
        self._image: AnyImageTower | None = None
        # Tower -> why it runs on torch although ONNX Runtime was chosen (export failed).
        self.runtime_fallbacks: dict[str, str] = {}
        self._heads: HeadSet | None = None
        self._warned_towers: set[str] = set()
        self.load_seconds: dict[str, float] = {}

    # ----------------------------------------------------------------- lazy state

    @property
    def device(self) -> str:
        """Where the towers and heads run (resolved once; reading it changes nothing)."""
        if self._device is None:
            with self._lock:
                if self._device is None:
                    self._device = resolve_device(self.settings.device)
        return self._device

    def _prepare_runtime(self) -> str:
        """The device, and on CPU torch's thread count set once, before the first tower
        loads: the towers are what run torch's thread pools (called under the lock)."""
        device = self.device
        if not self._runtime_ready:
            if device == "cpu":
                apply_cpu_threads(self.settings.cpu_threads)
            self._runtime_ready = True
        return device

    @property
    def runtime(self) -> RuntimeChoice:
        """The runtime chosen for the towers on this machine (resolved once)."""
        if self._runtime is None:
            with self._lock:
                if self._runtime is None:
                    self._runtime = choose_runtime(self.settings.runtime, self.device)
                    log.info("encoder runtime %s (%s)", self._runtime.name, self._runtime.reason)
        return self._runtime

    @property
    def text_tower(self) -> AnyTextTower:
        if self._text is None:
            with self._lock:
                if self._text is None:
                    from crossfeed.encoders.text import TextTower

                    started = time.perf_counter()
                    tower = TextTower.load(self.settings.text_model, self._prepare_runtime())
                    self._text = self._on_runtime("text", tower)
                    self.load_seconds["text"] = time.perf_counter() - started
        return self._text

    @property
    def image_tower(self) -> AnyImageTower:
        if self._image is None:
            with self._lock:
                if self._image is None:
                    from crossfeed.encoders.image import ImageTower

                    started = time.perf_counter()
                    tower = ImageTower.load(self.settings.image_model, self._prepare_runtime())
                    self._image = self._on_runtime("image", tower)
                    self.load_seconds["image"] = time.perf_counter() - started
        return self._image

    def tower_id(self, tower: str) -> str:
        """What a tower's features depend on, for feature caches: the model setting
        ("default" for the bundled one), plus the runtime when it is not torch (torch
        keeps the plain id, so caches written before runtimes existed stay valid). Known
        without loading the tower."""
        s = self.settings
        base = (s.text_model if tower == "text" else s.image_model) or "default"
        if self.runtime.name == "torch":
            return base
        if tower == "text" and s.onnx_text_quant != "none":
            return f"{base}|onnx-{s.onnx_text_quant}|{EXPORT_RECIPE}"
        return f"{base}|onnx|{EXPORT_RECIPE}"

    def _on_runtime(self, name: str, tower: Any) -> Any:
        """``tower`` as the chosen runtime runs it: itself on torch, else its ONNX graph.

        An export or session failure under ``auto`` keeps torch and says why (the
        embedder still works, just slower); under an explicit ``onnx`` it is an error.
        """
        if self.runtime.name != "onnx":
            return tower
        s = self.settings
        cache = cache_dir_for(s.onnx_cache_dir, self.models_dir)
        threads = cpu_thread_count(s.cpu_threads)
        try:
            from crossfeed.encoders import onnx_towers

            if name == "text":
                return onnx_towers.OnnxTextTower.from_torch(
                    tower, cache, threads, s.onnx_text_quant
                )
            return onnx_towers.OnnxImageTower.from_torch(tower, cache, threads)
        except Exception as exc:  # export/ORT failures take many forms; all mean "use torch"
            reason = f"{type(exc).__name__}: {exc}"
            if s.runtime == "onnx":
                msg = f"cannot run the {name} tower on onnxruntime: {reason}"
                raise ModelLoadError(msg) from exc
            log.warning("%s tower stays on torch: onnxruntime failed (%s)", name, reason)
            self.runtime_fallbacks[name] = reason
            return tower

    @property
    def heads(self) -> HeadSet:
        if self._heads is None:
            with self._lock:
                if self._heads is None:
                    self._heads = self._load_heads(self.settings.model_version)
        return self._heads

    def _load_heads(self, version: str) -> HeadSet:
        started = time.perf_counter()
        # Size a fallback to the towers only if they are loaded or custom; the
        # defaults' dims are known without loading 100 MB of weights.
        text_dim = self._text.dim if self._text else _DEFAULT_TEXT_DIM
        image_dim = self._image.dim if self._image else _DEFAULT_IMAGE_DIM
        if self._text is None and self.settings.text_model:
            text_dim = self.text_tower.dim
        if self._image is None and self.settings.image_model:
            image_dim = self.image_tower.dim
        heads = load_heads(
            self.models_dir, version, device=self.device, text_dim=text_dim, image_dim=image_dim
        )
        self.load_seconds["heads"] = time.perf_counter() - started
        return heads

    @property
    def version(self) -> str:  # type: ignore[override]
        return self.heads.version

    @property
    def dim(self) -> int:  # type: ignore[override]
        return self.heads.dim

    def load(self) -> SharedSpaceEmbedder:
        """Load both towers and the heads now (workers call this at startup)."""
        _ = self.text_tower, self.image_tower, self.heads
        return self

    def reload_heads(self, version: str = "latest") -> str:
        """Swap in another head version (e.g. a newly fitted one); returns its id."""
        heads = self._load_heads(version)
        with self._lock:
            self._heads = heads
            self._warned_towers.clear()
        return heads.version

    def info(self) -> dict[str, Any]:
        """What is loaded, for logs and the API's status endpoint."""
        return {
            "version": self.heads.version,
            "dim": self.heads.dim,
            "device": self.device,
            "runtime": self.runtime.name,
            "runtime_reason": self.runtime.reason,
            "text_runtime": getattr(self._text, "runtime", "torch") if self._text else None,
            "image_runtime": getattr(self._image, "runtime", "torch") if self._image else None,
            "runtime_fallbacks": dict(self.runtime_fallbacks),
            "text_model": self._text.model_id if self._text else None,
            "image_model": self._image.model_id if self._image else None,
            "load_seconds": dict(self.load_seconds),
        }

    # ------------------------------------------------------------- raw features

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) strings -> (n, text_dim) raw tower output (384-d for MiniLM)."""
        return self.text_tower.features(list(texts), self.batch_size)

    def image_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n,) images -> (n, image_dim) pooled tower features (1280-d for Lite0)."""
        return self.image_tower.features(list(images), self.batch_size)

    def video_features(self, videos: Sequence[Sequence[Image.Image]]) -> np.ndarray:
        """(n,) frame lists -> (n, image_dim) mean of each video's frame features."""
        counts = [len(frames) for frames in videos]
        if any(c == 0 for c in counts):
            raise MediaDecodeError("a video has no frames to embed")
        flat = [frame for frames in videos for frame in frames]
        feats = self.image_features(flat)
        pooled = np.empty((len(counts), feats.shape[1]), dtype=np.float32)
        start = 0
        for i, count in enumerate(counts):
            pooled[i] = feats[start : start + count].mean(axis=0)
            start += count
        return pooled

    # ---------------------------------------------------------- shared space

    def project(self, modality: str, features: np.ndarray) -> np.ndarray:
        """Tower features -> unit vectors in the shared space with the current heads."""
        heads = self.heads
        self._warn_tower_mismatch(heads, modality)
        return heads.project(modality, features, self.device)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.project("text", self.text_features(texts))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.project("image", self.image_features(images))

    def embed_videos(self, videos: Sequence[Sequence[Image.Image]]) -> np.ndarray:
        return self.project("video", self.video_features(videos))

    def embed_video_moments(
        self, frames: Sequence[Image.Image], groups: Sequence[Sequence[int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The tower runs once per frame; the whole video and each group are pooled
        from those features (as :meth:`video_features` pools) and projected together."""
        if not frames:
            raise MediaDecodeError("a video has no frames to embed")
        feats = self.image_features(frames)  # (n_frames, image_dim)
        pooled = [feats.mean(axis=0)] + [feats[list(g)].mean(axis=0) for g in groups]
        out = self.project("video", np.stack(pooled).astype(np.float32))  # (1 + groups, dim)
        return out[0], out[1:]

    def embed_media_with_posterior(
        self, modality: str, media: Sequence[Any]
    ) -> tuple[np.ndarray, list[dict[str, float]] | None]:
        """Vectors and, with a tag-space head, tag posteriors from one tower pass."""
        heads = self.heads
        if heads.tag_head(modality) is None:
            return super().embed_media_with_posterior(modality, media)
        feats = self._media_features(modality, media)
        return self.project(modality, feats), heads.tag_posteriors(modality, feats, self.device)

    def media_posteriors(
        self, modality: str, media: Sequence[Any]
    ) -> list[dict[str, float]] | None:
        heads = self.heads
        if heads.tag_head(modality) is None:
            return super().media_posteriors(modality, media)
        return heads.tag_posteriors(modality, self._media_features(modality, media), self.device)

    def _media_features(self, modality: str, media: Sequence[Any]) -> np.ndarray:
        if modality == "image":
            return self.image_features(media)
        if modality == "video":
            return self.video_features(media)
        raise InvalidInputError(f"expected modality image or video, got {modality!r}")

    def embed_video_frames(self, frames: Sequence[Image.Image]) -> np.ndarray:
        """(n_frames,) frames of one video -> (n_frames, dim) per-frame unit vectors.

        For aligning a query with moments of a video; pair the rows with the
        timestamps :func:`decode_video` returned.
        """
        return self.project("video", self.image_features(frames))

    # ------------------------------------------------- decoding with our limits

    def decode_image(self, data: bytes) -> Image.Image:
        """Decode untrusted image bytes with the configured size/pixel limits."""
        s = self.settings
        return decode_image(
            data, s.max_media_bytes, s.max_image_pixels, max_total_frames=s.max_media_frames
        )

    def decode_video(self, data: VideoSource) -> list[tuple[float, Image.Image]]:
        """Decode sampled ``(timestamp_s, frame)`` pairs with the configured limits."""
        s = self.settings
        return decode_video(
            data,
            s.video_fps,
            s.video_max_frames,
            s.max_media_bytes,
            max_pixels=s.max_image_pixels,
            max_total_frames=s.max_media_frames,
        )

    def _warn_tower_mismatch(self, heads: HeadSet, modality: str) -> None:
        towers = heads.config.get("towers") or {}
        name = "text" if modality == "text" else "image"
        loaded = self._text if name == "text" else self._image
        expected = towers.get(name)
        if expected and loaded is not None and loaded.model_id != expected:
            key = f"{heads.version}:{name}"
            if key not in self._warned_towers:
                self._warned_towers.add(key)
                log.warning(
                    "head version %s was fitted on %s features but the %s tower is %s",
                    heads.version,
                    expected,
                    name,
                    loaded.model_id,
                )


def load_embedder(settings: Settings, *, batch_size: int = 32) -> SharedSpaceEmbedder:
    """The embedder configured by ``settings`` (nothing is loaded until first use)."""
    return SharedSpaceEmbedder(settings.encoder, settings.models_dir, batch_size=batch_size)
