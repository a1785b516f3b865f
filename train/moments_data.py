"""Synthetic "social videos" for ``crossfeed eval moments``: composed, encoded, decoded.

A video is a few segments, each one still picture of a different top-level
category shown for a random 2-6 s. It is encoded as a real MP4 with PyAV
(small square frames, low frame rate), decoded again with
:func:`crossfeed.encoders.media.decode_video` at the production sampling
settings, and the sampled frames run through the image tower (features
cached by frame content: a still picture decodes to the same pixels frame
after frame, so most frames are cache hits). What comes out,
:class:`SampledVideo`, is what the embed stage sees of a video: timestamps
and per-frame tower features, plus the ground-truth segments, for scoring.

Durations are quantised to the encoder's frame interval, not to whole
seconds, so segment boundaries do not line up with the 1 fps samples or the
moment windows (``ops.corpus_video.write_video`` only takes whole seconds and
picture files, hence the small encoder here; its codec choice is reused).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from crossfeed.encoders.exceptions import TrainingError
from crossfeed.exceptions import InvalidInputError

if TYPE_CHECKING:
    from crossfeed.core.settings import EncoderSettings
    from crossfeed.train.clipart_data import ClipartSplit

FRAME_CACHE_FORMAT = "moment-frame-v1"
SEGMENTS_PER_VIDEO = 3
DEFAULT_DURATIONS_S = (2.0, 6.0)
DEFAULT_ENCODE_FPS = 4
DEFAULT_SIZE = 128

Features = Callable[[Sequence[Image.Image]], np.ndarray]
Decode = Callable[[bytes], list[tuple[float, Image.Image]]]


@dataclass(frozen=True)
class Segment:
    """One picture of a video: its category id and where it is shown (seconds)."""

    category: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class VideoSpec:
    """What to encode: pool rows of the pictures, in order, and their segments."""

    images: tuple[int, ...]
    segments: tuple[Segment, ...]

    @property
    def duration_s(self) -> float:
        return self.segments[-1].end_s


@dataclass
class SampledVideo:
    """A decoded video as the embed stage sees it, with its ground truth."""

    spec: VideoSpec
    timestamps: np.ndarray  # (n_frames,) seconds, from the decoder
    features: np.ndarray  # (n_frames, feature_dim) image-tower features

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self.spec.segments

    @property
    def duration_s(self) -> float:
        return self.spec.duration_s


def compose_specs(
    labels: np.ndarray,
    n_videos: int,
    rng: np.random.Generator,
    *,
    durations_s: tuple[float, float] = DEFAULT_DURATIONS_S,
    fps: int = DEFAULT_ENCODE_FPS,
    segments: int = SEGMENTS_PER_VIDEO,
) -> list[VideoSpec]:
    """``n_videos`` videos of ``segments`` pictures from distinct categories of ``labels``.

    Pictures are drawn uniformly from the pool (so categories come as often as
    the corpus has them), each next one among the categories not yet in the
    video; durations are uniform in ``durations_s``, rounded to ``1 / fps``.
    """
    labels = np.asarray(labels)
    low, high = durations_s
    if not 0 < low <= high:
        raise InvalidInputError(f"durations must satisfy 0 < min <= max, got {durations_s}")
    if len(set(labels.tolist())) < segments:
        raise TrainingError(f"the picture pool has fewer than {segments} categories")
    step = 1.0 / fps
    specs: list[VideoSpec] = []
    for _ in range(n_videos):
        rows: list[int] = []
        segs: list[Segment] = []
        start = 0.0
        for _ in range(segments):
            used = [int(labels[r]) for r in rows]
            eligible = np.flatnonzero(~np.isin(labels, used))
            row = int(rng.choice(eligible))
            length = max(step, round(float(rng.uniform(low, high)) / step) * step)
            rows.append(row)
            segs.append(Segment(int(labels[row]), round(start, 6), round(start + length, 6)))
            start += length
        specs.append(VideoSpec(tuple(rows), tuple(segs)))
    return specs


def square(image: Image.Image, size: int) -> Image.Image:
    """The picture fitted into a white ``size`` x ``size`` RGB square (transparency on white)."""
    rgba = ImageOps.contain(image.convert("RGBA"), (size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(rgba, ((size - rgba.width) // 2, (size - rgba.height) // 2), mask=rgba)
    return canvas


def encode_mp4(
    pictures: Sequence[Image.Image],
    seconds: Sequence[float],
    *,
    fps: int = DEFAULT_ENCODE_FPS,
    codec: str | None = None,
) -> bytes:
    """An MP4 slideshow: ``pictures[i]`` (same-size RGB squares) for ``seconds[i]`` each."""
    import av
    from av.video.stream import VideoStream

    from crossfeed.corpus.video import pick_codec

    if not pictures or len(pictures) != len(seconds):
        raise InvalidInputError("encode_mp4 needs one duration per picture, and some pictures")
    width, height = pictures[0].size
    codec = codec or pick_codec()
    buf = io.BytesIO()
    n = 0
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        if not isinstance(stream, VideoStream):
            raise InvalidInputError(f"{codec} is not a video codec")
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec in ("libx264", "h264"):
            stream.options = {"preset": "veryfast", "crf": "28"}
        for picture, secs in zip(pictures, seconds, strict=True):
            frame = av.VideoFrame.from_image(picture.convert("RGB"))
            for _ in range(max(1, round(secs * fps))):
                frame.pts = n
                n += 1
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


class CachedFrameFeatures:
    """Image-tower features of frames, cached by pixel content (``FeatureCache``)."""

    def __init__(self, features: Features, tower_id: str, cache_path: Path | None) -> None:
        from crossfeed.train.features import FeatureCache

        self._features = features
        self._tower = tower_id
        self.cache = FeatureCache(cache_path)

    def _key(self, frame: Image.Image) -> str:
        head = f"{FRAME_CACHE_FORMAT}|{self._tower}|{frame.mode}|{frame.size}|".encode()
        return hashlib.sha256(head + frame.tobytes()).hexdigest()

    def __call__(self, frames: Sequence[Image.Image]) -> np.ndarray:
        keys = [self._key(f) for f in frames]
        missing: dict[str, Image.Image] = {}
        for key, frame in zip(keys, frames, strict=True):
            if key in self.cache or key in missing:
                self.cache.hits += 1
            else:
                self.cache.misses += 1
                missing[key] = frame
        if missing:
            feats = self._features(list(missing.values()))
            for key, vec in zip(missing, feats, strict=True):
                self.cache.put(key, vec)
        return np.stack([self.cache[k] for k in keys]).astype(np.float32)

    def save(self) -> None:
        self.cache.save()


def sample_videos(
    specs: Sequence[VideoSpec],
    picture: Callable[[int], Image.Image],
    decode: Decode,
    features: Features,
    *,
    fps: int = DEFAULT_ENCODE_FPS,
    progress: bool = False,
    desc: str = "videos",
) -> list[SampledVideo]:
    """Encode each spec as an MP4, decode it with ``decode`` and featurise the samples.

    ``picture(row)`` returns the pool picture as an RGB square (all the same size).
    """
    from tqdm import tqdm

    from crossfeed.corpus.video import pick_codec

    codec = pick_codec()
    out: list[SampledVideo] = []
    for spec in tqdm(specs, desc=desc, unit="video", disable=not progress):
        seconds = [s.end_s - s.start_s for s in spec.segments]
        data = encode_mp4([picture(r) for r in spec.images], seconds, fps=fps, codec=codec)
        decoded = decode(data)
        if not decoded:
            raise TrainingError("a composed video decoded to no frames")
        times = np.array([t for t, _ in decoded], dtype=np.float64)
        out.append(SampledVideo(spec, times, features([f for _, f in decoded])))
    return out


def production_decoder(settings: EncoderSettings) -> Decode:
    """``decode_video`` with the stream's sampling settings (fps, max frames, limits)."""
    from crossfeed.encoders.media import decode_video

    def decode(data: bytes) -> list[tuple[float, Image.Image]]:
        return decode_video(
            data,
            settings.video_fps,
            settings.video_max_frames,
            settings.max_media_bytes,
            max_pixels=settings.max_image_pixels,
        )

    return decode


class PicturePool:
    """The still pictures of a split's gallery (image rows only), loaded on demand."""

    def __init__(self, split: ClipartSplit, max_bytes: int, max_pixels: int, size: int) -> None:
        self.split = split
        self.rows = [i for i, m in enumerate(split.gallery.modalities) if m == "image"]
        if not self.rows:
            raise TrainingError("the split's gallery holds no still images")
        self.labels = np.asarray(split.gallery_labels)[self.rows]
        self._limits = (max_bytes, max_pixels)
        self._size = size
        self._loaded: dict[int, Image.Image] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def __call__(self, index: int) -> Image.Image:
        """Picture ``index`` of the pool (0..len-1) as a ``size`` square."""
        if index not in self._loaded:
            self._loaded[index] = square(self._read(self.rows[index]), self._size)
        return self._loaded[index]

    def _read(self, row: int) -> Image.Image:
        from crossfeed.encoders.media import decode_image
        from crossfeed.train.features import read_media_bytes

        gallery = self.split.gallery
        post_id, ref = gallery.post_ids[row], gallery.media_refs[row]
        # The n-th row of this post with this reference is its n-th such image.
        nth = sum(
            1 for i in range(row) if gallery.post_ids[i] == post_id and gallery.media_refs[i] == ref
        )
        items = [
            m for m in self.split.posts[post_id].media if m.kind == "image" and m.reference() == ref
        ]
        if nth >= len(items):
            raise TrainingError(f"post {post_id} has no image {ref!r}")
        max_bytes, max_pixels = self._limits
        data = read_media_bytes(
            items[nth], self.split.posts_path.parent.resolve(), self.split.media_roots, max_bytes
        )
        if data is None:
            raise TrainingError(f"post {post_id}: image {ref!r} is not stored locally")
        return decode_image(data, max_bytes, max_pixels)
