"""Decoding untrusted images and videos, with hard limits.

Everything here treats its input as hostile: sizes are checked before any pixel
is decoded, image formats and video containers are allow-listed (FFmpeg would
otherwise happily probe playlists that open other files or URLs), decode time
is bounded, and every failure surfaces as :class:`MediaDecodeError`, so a bad
post is dead-lettered instead of taking a worker down.

Decompression bombs (a few KB that claim gigapixels, or thousands of frames) are
refused from their headers before a decoder allocates them: Pillow opens images
lazily, so their size and frame count are read and checked before ``load()``;
FFmpeg is told the pixel limit (its ``max_pixels`` option), so even the frames it
decodes while probing a container (``avformat_find_stream_info`` decodes H.264 to
learn its delay) are refused before their buffers exist; video frame counts come
from the container's header or from counting packets, never from decoding.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from crossfeed.encoders.exceptions import MediaDecodeError

log = logging.getLogger(__name__)

# TIFF and the exotic formats are left out on purpose: large attack surface and
# no social network serves them. (Multi-picture phone JPEGs open through "JPEG".)
ALLOWED_IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP")

# Frames handed to the image tower are downscaled to this longest side: the
# tower works at 224 px, and 16 full-HD RGB frames would cost ~100 MB per video.
DEFAULT_FRAME_MAX_SIDE = 640
DEFAULT_VIDEO_TIMEOUT_S = 30.0
# Frames an animated image or a video may have (10 minutes at 30 fps).
DEFAULT_MAX_MEDIA_FRAMES = 18_000
# Gaps longer than this between wanted timestamps are crossed by seeking, not decoding.
_SEEK_GAP_S = 2.0

VideoSource = bytes | bytearray | memoryview | str | os.PathLike[str]


def to_rgb(image: Image.Image) -> Image.Image:
    """Return an RGB copy of ``image``; transparent pixels are composited onto white.

    Transparent social-media PNGs (stickers, logos) are usually drawn on a light
    page; converting them with ``convert("RGB")`` would paint the transparent
    area black and change what the image tower sees.
    """
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode in ("P", "L", "RGB", "1") and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Wide grey formats: scale to 8 bit instead of clipping everything to white.
        import numpy as np

        arr = np.asarray(image, dtype=np.float64)
        top = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / top if top > 255.0 else 1.0
        arr8 = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    return image.convert("RGB")


def decode_image(
    data: bytes,
    max_bytes: int,
    max_pixels: int,
    *,
    max_total_frames: int = DEFAULT_MAX_MEDIA_FRAMES,
) -> Image.Image:
    """Decode an image from bytes into an RGB :class:`PIL.Image.Image`.

    The pixel count is read from the header and checked before decoding, so a
    tiny file that claims 100 000 x 100 000 pixels is refused without allocating
    memory; so is an animated image of more than ``max_total_frames`` frames (counted
    from its headers: GIF blocks are walked, WebP and APNG declare theirs). Animated
    images yield their first frame; EXIF orientation is applied.

    Raises:
        MediaDecodeError: empty, oversized, corrupt, truncated, unsupported
            format, more than ``max_pixels`` pixels or ``max_total_frames`` frames.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MediaDecodeError(f"image data must be bytes, got {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise MediaDecodeError("image is empty")
    if size > max_bytes:
        raise MediaDecodeError(f"image is {size} bytes, over the {max_bytes}-byte limit")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is the one that counts; PIL's global
            # bomb warning would otherwise leak into logs.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(bytes(data)), formats=ALLOWED_IMAGE_FORMATS)
            width, height = image.size
            if width <= 0 or height <= 0:
                raise MediaDecodeError(f"image has invalid size {width}x{height}")
            if width * height > max_pixels:
                raise MediaDecodeError(
                    f"image is {width}x{height} = {width * height} pixels, "
                    f"over the {max_pixels}-pixel limit (decompression bomb?)"
                )
            frames = int(getattr(image, "n_frames", 1))
            if frames > max_total_frames:
                raise MediaDecodeError(
                    f"image has {frames} frames, over the {max_total_frames}-frame limit"
                )
            if frames > 1:
                image.seek(0)
            image.load()
            return to_rgb(_apply_exif_orientation(image))
    except MediaDecodeError:
        raise
    except Image.UnidentifiedImageError as exc:
        allowed = ", ".join(ALLOWED_IMAGE_FORMATS)
        raise MediaDecodeError(f"unsupported or unrecognised image format ({allowed})") from exc
    except Image.DecompressionBombError as exc:
        raise MediaDecodeError(f"image refused as a decompression bomb: {exc}") from exc
    except MemoryError as exc:
        raise MediaDecodeError("image too large to decode in memory") from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:
        # Pillow signals corrupt/truncated data with any of these.
        raise MediaDecodeError(f"corrupt image: {exc}") from exc


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate phone photos upright; a malformed EXIF block is ignored, not fatal."""
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:  # EXIF is optional metadata, never worth failing over
        log.debug("ignoring malformed EXIF orientation", exc_info=True)
        return image


# --------------------------------------------------------------------------- video

# Magic numbers -> FFmpeg demuxer. Forcing the demuxer stops FFmpeg from probing
# formats such as HLS or concat, whose playlists can open arbitrary files/URLs.
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot", b"uuid")


def sniff_container(head: bytes) -> str | None:
    """Return the FFmpeg demuxer for a video's first bytes, or None if not allowed."""
    if len(head) >= 12 and head[4:8] in _MP4_BOXES:
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"FLV\x01"):
        return "flv"
    if head.startswith(b"OggS"):
        return "ogg"
    if len(head) >= 377 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47:
        return "mpegts"
    return None


def decode_video(
    data: VideoSource,
    fps: float,
    max_frames: int,
    max_bytes: int,
    *,
    max_pixels: int = 40_000_000,
    max_side: int | None = DEFAULT_FRAME_MAX_SIDE,
    timeout_s: float = DEFAULT_VIDEO_TIMEOUT_S,
    max_total_frames: int = DEFAULT_MAX_MEDIA_FRAMES,
) -> list[tuple[float, Image.Image]]:
    """Decode sampled frames of a video as ``[(timestamp_s, RGB image), ...]``.

    Sampling: ``fps > 0`` takes ``fps`` frames per second; when that would give
    more than ``max_frames`` and the duration is known, the interval is widened
    so the samples still span the whole clip (mean-pooled video vectors should
    describe all of it, not the first seconds). ``fps <= 0`` takes keyframes
    only, the first ``max_frames`` of them.

    ``data`` is the file's bytes or a local path. Path inputs are not
    sandboxed here: callers validate them against their allowed media roots.

    Limits are checked before FFmpeg decodes anything: frames over ``max_pixels``
    (FFmpeg's own ``max_pixels`` option, so probing the container cannot allocate one
    either), more than ``max_total_frames`` frames (from the header, else by counting
    packets), more than ``max_bytes`` bytes.

    Raises:
        MediaDecodeError: oversized, unsupported container, no video stream,
            corrupt, too many pixels per frame, too many frames, no decodable
            frame, or decoding took longer than ``timeout_s``.
    """
    if max_frames < 1:
        raise ValueError("max_frames must be >= 1")
    opener, head = _open_source(data, max_bytes)
    fmt = sniff_container(head)
    if fmt is None:
        raise MediaDecodeError("unsupported or unrecognised video container")
    import av  # heavy; imported on use

    deadline = time.monotonic() + timeout_s
    # Decoders refuse (without allocating) any frame over the limit: while av.open probes
    # the stream (it decodes a few H.264 frames), and while we decode.
    limit = {"max_pixels": str(max(1, max_pixels))}
    try:
        with av.open(opener(), mode="r", format=fmt, options=limit) as container:
            if not container.streams.video:
                raise MediaDecodeError("media has no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            width, height = int(ctx.width or 0), int(ctx.height or 0)
            if width * height > max_pixels:
                raise MediaDecodeError(
                    f"video frames are {width}x{height}, over the {max_pixels}-pixel limit"
                )
            total = int(stream.frames or 0) or _count_frames(
                opener, fmt, limit, max_total_frames, deadline
            )
            if total > max_total_frames:
                counted = f"{total}" if stream.frames else f"more than {max_total_frames}"
                raise MediaDecodeError(
                    f"video has {counted} frames, over the {max_total_frames}-frame limit"
                )
            ctx.options = dict(limit)
            ctx.thread_type = "AUTO"
            if fps <= 0:
                ctx.skip_frame = "NONKEY"
                frames = _take_keyframes(container, stream, max_frames, deadline)
            else:
                duration = _duration_s(container, stream)
                interval = 1.0 / fps
                if duration is not None and duration * fps > max_frames:
                    interval = duration / max_frames
                frames = _take_sampled(container, stream, interval, max_frames, deadline)
            result = [(ts, _frame_image(frame, max_side)) for ts, frame in frames]
    except MediaDecodeError:
        raise
    except MemoryError as exc:
        raise MediaDecodeError("video too large to decode in memory") from exc
    except (av.FFmpegError, OSError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise MediaDecodeError(f"corrupt video: {exc}") from exc
    if not result:
        raise MediaDecodeError("video has no decodable frames")
    return result


def _open_source(data: VideoSource, max_bytes: int) -> tuple[Callable[[], Any], bytes]:
    """Check the size limit; return (a function giving what av.open reads, the first bytes)."""
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if not raw:
            raise MediaDecodeError("video is empty")
        if len(raw) > max_bytes:
            raise MediaDecodeError(f"video is {len(raw)} bytes, over the {max_bytes}-byte limit")
        return lambda: io.BytesIO(raw), raw[:512]
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        try:
            st = path.stat()
        except OSError as exc:
            raise MediaDecodeError(f"cannot read video file {path.name!r}: {exc}") from exc
        if not path.is_file():
            raise MediaDecodeError(f"video path {path.name!r} is not a regular file")
        if st.st_size == 0:
            raise MediaDecodeError("video is empty")
        if st.st_size > max_bytes:
            raise MediaDecodeError(f"video is {st.st_size} bytes, over the {max_bytes}-byte limit")
        with path.open("rb") as fh:
            head = fh.read(512)
        return lambda: str(path), head
    raise MediaDecodeError(f"video data must be bytes or a path, got {type(data).__name__}")


def _count_frames(
    opener: Callable[[], Any], fmt: str, options: dict[str, str], limit: int, deadline: float
) -> int:
    """Frames of the first video stream, by counting packets (nothing is decoded); stops
    counting at ``limit + 1``. For containers that do not declare a frame count."""
    import av

    count = 0
    with av.open(opener(), mode="r", format=fmt, options=options) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                count += 1
            if count > limit:
                break
            if time.monotonic() > deadline:
                raise MediaDecodeError("video decoding exceeded its time limit")
    return count


def _duration_s(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        value = float(stream.duration * stream.time_base)
        if value > 0 and math.isfinite(value):
            return value
    if container.duration:
        import av

        return float(container.duration) / av.time_base
    return None


def _frame_time(frame: Any, fallback: float) -> float:
    t = frame.time
    return float(t) if t is not None and math.isfinite(t) else fallback


def _decode(container: Any, stream: Any, deadline: float) -> Iterator[Any]:
    for frame in container.decode(stream):
        if time.monotonic() > deadline:
            raise MediaDecodeError("video decoding exceeded its time limit")
        yield frame


def _take_keyframes(
    container: Any, stream: Any, max_frames: int, deadline: float
) -> list[tuple[float, Any]]:
    out: list[tuple[float, Any]] = []
    for i, frame in enumerate(_decode(container, stream, deadline)):
        out.append((_frame_time(frame, float(i)), frame))
        if len(out) >= max_frames:
            break
    return out


def _take_sampled(
    container: Any, stream: Any, interval: float, max_frames: int, deadline: float
) -> list[tuple[float, Any]]:
    """Take the first frame at or after each target time ``k * interval``.

    Long gaps are crossed with a backward seek to the keyframe before the next
    target (decoding every frame of a long clip just to keep 16 is wasteful).
    """
    out: list[tuple[float, Any]] = []
    target = 0.0
    last_t = -math.inf
    seeked_for = -math.inf  # seek at most once per target, or a long GOP loops forever
    seek_from: float | None = None  # position when the last seek was issued
    seek_useful = stream.time_base is not None
    frames = _decode(container, stream, deadline)
    index = 0
    while len(out) < max_frames:
        try:
            frame = next(frames)
        except StopIteration:
            break
        t = _frame_time(frame, index * interval)
        index += 1
        if seek_from is not None:
            if t <= seek_from:
                # Landed behind where we were: keyframes are further apart than
                # our gaps, so seeking only re-decodes. Decode straight on.
                seek_useful = False
            seek_from = None
        if t <= last_t:  # already past this one (or reordered timestamps after a seek)
            continue
        if t + 1e-6 < target:
            if seek_useful and target - t > _SEEK_GAP_S and seeked_for < target:
                seeked_for, seek_from = target, t
                container.seek(int(target / stream.time_base), stream=stream, backward=True)
                frames = _decode(container, stream, deadline)
            continue
        out.append((t, frame))
        last_t = t
        # Next target after this frame; skip targets this frame already covers.
        target = (math.floor(t / interval + 1e-6) + 1) * interval
    return out


def _frame_image(frame: Any, max_side: int | None) -> Image.Image:
    width, height = int(frame.width), int(frame.height)
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        return frame.to_image(
            width=max(1, round(width * scale)), height=max(1, round(height * scale))
        )
    return frame.to_image()
