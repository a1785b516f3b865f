"""Short slideshow videos for the sample corpus, encoded with PyAV.

A video shows a few pictures of one category, each for one or two seconds, at a
small square resolution and a low frame rate: enough for the video path of the
pipeline (decode, sample frames, embed) without making the corpus heavy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crossfeed.exceptions import ConfigError, InvalidInputError

# Preferred encoders, best first; the PyAV wheel ships libx264 and mpeg4.
_CODECS = ("libx264", "h264", "mpeg4")


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    codec: str
    frames: int
    fps: int
    width: int
    height: int
    size_bytes: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps


def pick_codec() -> str:
    """The best video encoder this PyAV build offers (h264 if present, else mpeg4)."""
    import av

    for name in _CODECS:
        if name not in av.codecs_available:
            continue
        try:
            av.Codec(name, "w")
        except Exception:  # PyAV raises several types for "no encoder"
            continue
        return name
    raise ConfigError("PyAV has no h264 or mpeg4 encoder; cannot make videos")


def _frame_array(path: Path, size: int):  # -> numpy.ndarray (imported lazily)
    """The picture fitted into a white ``size`` x ``size`` square, as an RGB array."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        rgba = img.convert("RGBA")
    rgba = ImageOps.contain(rgba, (size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    offset = ((size - rgba.width) // 2, (size - rgba.height) // 2)
    canvas.paste(rgba, offset, mask=rgba)
    return np.asarray(canvas, dtype=np.uint8)


def write_video(
    images: Sequence[Path],
    seconds: Sequence[int],
    dest: Path,
    *,
    size: int = 256,
    fps: int = 8,
    codec: str | None = None,
) -> VideoInfo:
    """Encode a slideshow of ``images`` (``seconds[i]`` each) into the MP4 ``dest``.

    The file is written next to ``dest`` first and renamed into place, so a reader never
    sees a half-written video.
    """
    import av
    from av.video.stream import VideoStream

    if not images or len(images) != len(seconds):
        raise InvalidInputError("write_video needs one duration per image, and some images")
    if size < 16 or size > 4096 or size % 2:
        raise InvalidInputError("video size must be an even number between 16 and 4096")
    if fps < 1 or fps > 60 or any(s < 1 or s > 60 for s in seconds):
        raise InvalidInputError("fps and per-image seconds must be between 1 and 60")
    codec = codec or pick_codec()
    tmp = dest.with_name(f".{dest.name}.tmp")
    frames = 0
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=fps)
            if not isinstance(stream, VideoStream):
                raise ConfigError(f"{codec} is not a video codec")
            stream.width = size
            stream.height = size
            stream.pix_fmt = "yuv420p"
            if codec in ("libx264", "h264"):
                stream.options = {"preset": "veryfast", "crf": "28"}
            else:
                stream.bit_rate = 400_000
            for path, secs in zip(images, seconds, strict=True):
                frame = av.VideoFrame.from_ndarray(_frame_array(path, size), format="rgb24")
                for _ in range(secs * fps):
                    frame.pts = frames
                    for packet in stream.encode(frame):
                        container.mux(packet)
                    frames += 1
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return VideoInfo(
        path=dest,
        codec=codec,
        frames=frames,
        fps=fps,
        width=size,
        height=size,
        size_bytes=dest.stat().st_size,
    )
