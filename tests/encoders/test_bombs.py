"""Decompression bombs are refused from their headers, before any decoder allocates them.

Two kinds of proof: the decoders are never called (Pillow's ``load`` and the video decode
loop are replaced by tripwires), and, in a fresh process, peak memory does not grow by
the size of even one decoded frame (with a control that shows the measurement sees a
real decode).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import ImageFile, WebPImagePlugin

from crossfeed.encoders import bombs, media
from crossfeed.encoders.exceptions import MediaDecodeError
from crossfeed.encoders.media import decode_image, decode_video

MB = 1024 * 1024
PIXELS = 40_000_000  # the default CROSSFEED_MAX_IMAGE_PIXELS


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tripwires: any image or video decode fails the test."""

    def tripwire(*_: object, **__: object) -> None:
        raise AssertionError("a decoder was called")

    monkeypatch.setattr(ImageFile.ImageFile, "load", tripwire)
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", tripwire)
    monkeypatch.setattr(media, "_decode", tripwire)


def test_the_tripwires_fire(no_decoding: None, png_bytes, make_video) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    with pytest.raises(AssertionError, match="decoder"):
        decode_image(png_bytes(Image.new("RGB", (4, 4))), MB, PIXELS)
    with pytest.raises(AssertionError, match="decoder"):
        decode_video(make_video(seconds=1.0), 1.0, 4, MB)


IMAGE_BOMBS: dict[str, tuple[Callable[[], bytes], str]] = {
    "png 100000x100000": (lambda: bombs.png_bomb(100_000, 100_000, complete=False), "bomb"),
    "png 7000x7000": (lambda: bombs.png_bomb(7_000, 7_000, complete=False), "pixel limit"),
    "jpeg 65000x65000": (lambda: bombs.jpeg_bomb(65_000, 65_000), "bomb"),
    "jpeg 8000x8000": (lambda: bombs.jpeg_bomb(8_000, 8_000), "pixel limit"),
    "gif screen 65535x65535": (lambda: bombs.gif_bomb(2, 65_535, 65_535), "bomb"),
    "gif 20000 frames": (lambda: bombs.gif_bomb(20_000), "frame limit"),
    "webp canvas 9000x9000": (lambda: bombs.webp_bomb(2, (9_000, 9_000)), "pixel limit"),
    "webp 3000 frames": (lambda: bombs.webp_bomb(3_000), "frame limit"),
    "apng declaring 10^9 frames": (lambda: bombs.apng_bomb(10**9), "frame limit"),
}


@pytest.mark.parametrize("name", sorted(IMAGE_BOMBS))
def test_image_bombs_are_refused_without_decoding(no_decoding: None, name: str) -> None:
    build, reason = IMAGE_BOMBS[name]
    data = build()
    assert len(data) < 500_000
    with pytest.raises(MediaDecodeError, match=reason):
        decode_image(data, 20 * MB, PIXELS, max_total_frames=1_000)


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: bombs.gif_bomb(5_000), "5000 frames"),  # the GIF demuxer declares them
        (lambda: bombs.h264_bomb(32, 32, frames=150), "150 frames"),  # MP4: from its index
        (lambda: bombs.h264_bomb(32, 32, frames=150, container="matroska"), "more than 100"),
        (lambda: bombs.h264_bomb(2048, 2048, frames=1), "pixel limit"),
    ],
    ids=["gif frames", "mp4 frames", "matroska frames (counted)", "mp4 dimensions"],
)
def test_video_bombs_are_refused_without_decoding(
    no_decoding: None, build: Callable[[], bytes], reason: str
) -> None:
    with pytest.raises(MediaDecodeError, match=reason):
        decode_video(build(), 1.0, 4, 20 * MB, max_pixels=1_000_000, max_total_frames=100)


def test_frame_limits_let_ordinary_media_through(make_video) -> None:  # type: ignore[no-untyped-def]
    assert decode_image(bombs.gif_bomb(100), MB, PIXELS, max_total_frames=100).size == (1, 1)
    data = make_video(seconds=3.0, fps=10, container="matroska")  # 30 frames, counted
    assert len(decode_video(data, 1.0, 4, MB, max_total_frames=30)) == 3


# ------------------------------------------------------------------ memory, measured

_MEASURE = """
import json, sys
from crossfeed.encoders.exceptions import MediaDecodeError
from crossfeed.encoders.media import decode_image, decode_video

def peak_kb():  # VmHWM: this process image's peak RSS (ru_maxrss survives exec: pytest's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

kind, path, max_pixels = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(path, "rb").read()
before = peak_kb()
try:
    if kind == "image":
        decode_image(data, 64 << 20, max_pixels)
    else:
        decode_video(data, 1.0, 2, 64 << 20, max_pixels=max_pixels)
    error = None
except MediaDecodeError as exc:
    error = str(exc)
after = peak_kb()
print(json.dumps({"error": error, "growth_kb": after - before}))
"""


def _peak_growth(kind: str, data: bytes, max_pixels: int, tmp_path: Path) -> dict[str, object]:
    """Decode in a fresh process (av and Pillow loaded first); peak RSS growth in KiB."""
    path = tmp_path / f"bomb.{kind}"
    path.write_bytes(data)
    warm = "import av, PIL.Image, PIL.PngImagePlugin; av.open; "
    out = subprocess.run(
        [sys.executable, "-c", warm + _MEASURE, kind, str(path), str(max_pixels)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def h264_4096() -> bytes:
    return bombs.h264_bomb(4096, 4096)  # ~50 KB; one decoded frame is 24 MiB


def test_png_bomb_costs_no_memory(tmp_path: Path) -> None:
    """30000 x 30000 zeros in ~100 KB: decoding would take 900 MB."""
    data = bombs.png_bomb(30_000, 30_000)
    assert len(data) < MB
    result = _peak_growth("image", data, PIXELS, tmp_path)
    assert "bomb" in str(result["error"])
    assert int(result["growth_kb"]) < 64 * 1024, result


def test_video_bomb_costs_less_than_one_frame(tmp_path: Path, h264_4096: bytes) -> None:
    """Before the fix, av.open alone decoded the first 4096 x 4096 frames while probing
    the stream (+45 MB) and the pixel check came after; now FFmpeg refuses them."""
    frame_kb = 4096 * 4096 * 3 // 2 // 1024
    result = _peak_growth("video", h264_4096, 1_000_000, tmp_path)
    assert "pixel limit" in str(result["error"])
    assert int(result["growth_kb"]) < frame_kb * 2 // 3, result
    # Control: the same file under a limit it fits does decode, and the measurement shows it.
    decoded = _peak_growth("video", h264_4096, 4096 * 4096, tmp_path)
    assert decoded["error"] is None and int(decoded["growth_kb"]) > frame_kb, decoded
