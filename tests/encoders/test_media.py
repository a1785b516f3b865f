"""Decoding untrusted images and videos: limits, corrupt input, compositing."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from crossfeed.encoders import media
from crossfeed.encoders.exceptions import MediaDecodeError
from crossfeed.encoders.media import decode_image, decode_video, sniff_container, to_rgb
from crossfeed.exceptions import InvalidInputError

MB = 1024 * 1024


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG whose 1-bit rows of zeros compress to almost nothing."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_media_decode_error_is_invalid_input_and_not_retriable() -> None:
    err = MediaDecodeError("x")
    assert isinstance(err, InvalidInputError)
    assert err.retriable is False


def test_decode_png_roundtrip(png_bytes) -> None:
    src = Image.new("RGB", (40, 30), (10, 200, 30))
    out = decode_image(png_bytes(src), max_bytes=MB, max_pixels=10_000)
    assert out.mode == "RGB" and out.size == (40, 30)
    assert out.getpixel((5, 5)) == (10, 200, 30)


def test_transparent_png_is_composited_on_white(png_bytes) -> None:
    src = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    src.paste((255, 0, 0, 255), (0, 0, 10, 20))  # left half opaque red
    src.paste((0, 0, 255, 128), (10, 0, 20, 20))  # right half half-transparent blue
    out = decode_image(png_bytes(src), max_bytes=MB, max_pixels=10_000)
    assert out.mode == "RGB"
    assert out.getpixel((2, 2)) == (255, 0, 0)
    r, g, b = out.getpixel((15, 2))
    assert abs(r - 127) <= 2 and abs(g - 127) <= 2 and b == 255  # blue over white


def test_palette_transparency_is_composited_on_white(png_bytes) -> None:
    src = Image.new("P", (8, 8), 0)
    src.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    src.info["transparency"] = 0
    src.paste(1, (0, 0, 4, 8))
    out = decode_image(png_bytes(src), max_bytes=MB, max_pixels=10_000)
    assert out.getpixel((1, 1)) == (255, 0, 0)
    assert out.getpixel((6, 6)) == (255, 255, 255)  # transparent black -> white, not black


def test_to_rgb_keeps_wide_grey_images_visible() -> None:
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    image = Image.fromarray(arr)
    assert image.mode.startswith("I;16")
    out = to_rgb(image)
    values = np.asarray(out)
    assert out.mode == "RGB" and values.min() == 0 and values.max() == 255


def test_corrupt_png_raises(png_bytes) -> None:
    data = bytearray(png_bytes(Image.new("RGB", (64, 64), (1, 2, 3))))
    data[40:80] = b"\xff" * 40  # smash the IDAT stream
    with pytest.raises(MediaDecodeError):
        decode_image(bytes(data), max_bytes=MB, max_pixels=10_000)


def test_truncated_jpeg_raises() -> None:
    buf = io.BytesIO()
    Image.effect_noise((128, 128), 64).convert("RGB").save(buf, format="JPEG")
    with pytest.raises(MediaDecodeError, match="corrupt"):
        decode_image(buf.getvalue()[: len(buf.getvalue()) // 2], max_bytes=MB, max_pixels=10**6)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"GIF89a\x00"])
def test_garbage_raises(data: bytes) -> None:
    with pytest.raises(MediaDecodeError):
        decode_image(data, max_bytes=MB, max_pixels=10_000)


def test_disallowed_format_is_refused() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="TIFF")
    with pytest.raises(MediaDecodeError, match="unsupported"):
        decode_image(buf.getvalue(), max_bytes=MB, max_pixels=10_000)


def test_oversized_bytes_refused_before_decoding(png_bytes) -> None:
    data = png_bytes(Image.new("RGB", (64, 64)))
    with pytest.raises(MediaDecodeError, match="byte limit"):
        decode_image(data, max_bytes=len(data) - 1, max_pixels=10**6)


def test_decompression_bomb_refused() -> None:
    bomb = _bomb_png(30_000, 30_000)  # 900 Mpx in a few hundred KB
    assert len(bomb) < MB
    with pytest.raises(MediaDecodeError, match="decompression bomb"):
        decode_image(bomb, max_bytes=MB, max_pixels=40_000_000)


def test_pixel_limit_checked_from_header_before_decoding() -> None:
    bomb = _bomb_png(5_000, 5_000)  # under Pillow's own bomb limit, over ours
    with pytest.raises(MediaDecodeError, match="pixel limit"):
        decode_image(bomb, max_bytes=MB, max_pixels=1_000_000)
    assert decode_image(_bomb_png(500, 400), max_bytes=MB, max_pixels=200_000).size == (500, 400)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    out = decode_image(buf.getvalue(), max_bytes=MB, max_pixels=10_000)
    assert out.getpixel((5, 5))[0] > 200


def test_exif_orientation_is_applied() -> None:
    src = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buf = io.BytesIO()
    src.save(buf, format="JPEG", exif=exif)
    out = decode_image(buf.getvalue(), max_bytes=MB, max_pixels=10_000)
    assert out.size == (20, 40)


# ---------------------------------------------------------------------- video


def test_video_decodes_n_per_second(make_video) -> None:
    data = make_video(seconds=3.0, fps=10)
    frames = decode_video(data, fps=2.0, max_frames=16, max_bytes=MB)
    times = [t for t, _ in frames]
    assert len(frames) == 6
    assert times == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], abs=0.05)
    assert all(im.mode == "RGB" and im.size == (64, 48) for _, im in frames)
    reds = [np.asarray(im)[..., 0].mean() for _, im in frames]
    assert reds == sorted(reds) and reds[-1] - reds[0] > 100  # later frames are brighter


def test_video_frames_are_capped_and_span_the_clip(make_video) -> None:
    data = make_video(seconds=3.0, fps=10)
    frames = decode_video(data, fps=10.0, max_frames=4, max_bytes=MB)
    times = [t for t, _ in frames]
    assert len(frames) == 4
    assert times[-1] >= 2.0  # spread over 3 s, not the first 0.4 s


@pytest.mark.parametrize(("gop", "max_decoded"), [(10, 40), (1000, 150 * 2)])
def test_long_video_sampling_seeks(
    make_video, monkeypatch: pytest.MonkeyPatch, gop: int, max_decoded: int
) -> None:
    """Gaps are crossed by seeking (2 s GOPs); with one keyframe, at most one wasted pass."""
    decoded = 0
    original = media._decode

    def counting(*args):
        nonlocal decoded
        for frame in original(*args):
            decoded += 1
            yield frame

    monkeypatch.setattr(media, "_decode", counting)
    data = make_video(seconds=30.0, fps=5, gop=gop)  # 150 frames
    frames = decode_video(data, fps=1.0, max_frames=5, max_bytes=8 * MB)
    times = [t for t, _ in frames]
    assert times == pytest.approx([0.0, 6.0, 12.0, 18.0, 24.0], abs=0.25)
    assert decoded <= max_decoded


def test_video_keyframes_mode(make_video) -> None:
    data = make_video(seconds=3.0, fps=10, gop=10)
    frames = decode_video(data, fps=0, max_frames=16, max_bytes=MB)
    assert [round(t, 1) for t, _ in frames] == [0.0, 1.0, 2.0]


def test_video_from_path_and_downscaled(make_video, tmp_path) -> None:
    path = tmp_path / "clip.mkv"
    path.write_bytes(make_video(seconds=1.0, fps=5, size=(320, 240), container="matroska"))
    frames = decode_video(path, fps=1.0, max_frames=4, max_bytes=MB, max_side=100)
    assert len(frames) == 1 and frames[0][1].size == (100, 75)


def test_corrupt_video_raises(make_video) -> None:
    data = bytearray(make_video(seconds=1.0))
    data[48:] = bytes(len(data) - 48)  # valid ftyp box, everything after zeroed
    with pytest.raises(MediaDecodeError):
        decode_video(bytes(data), fps=1.0, max_frames=4, max_bytes=MB)


def test_truncated_video_raises(make_video) -> None:
    data = make_video(seconds=3.0)
    with pytest.raises(MediaDecodeError):
        decode_video(data[: len(data) // 3], fps=1.0, max_frames=4, max_bytes=MB)


@pytest.mark.parametrize(
    "data",
    [
        b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
        b"ffconcat version 1.0\nfile /etc/passwd\n",
        b"\x00" * 600,
    ],
)
def test_unsupported_container_refused_without_probing(data: bytes) -> None:
    with pytest.raises(MediaDecodeError, match="unsupported"):
        decode_video(data, fps=1.0, max_frames=4, max_bytes=MB)


def test_video_limits(make_video, tmp_path) -> None:
    data = make_video(seconds=1.0, size=(64, 48))
    with pytest.raises(MediaDecodeError, match="byte limit"):
        decode_video(data, fps=1.0, max_frames=4, max_bytes=len(data) - 1)
    with pytest.raises(MediaDecodeError, match="pixel limit"):
        decode_video(data, fps=1.0, max_frames=4, max_bytes=MB, max_pixels=64 * 48 - 1)
    with pytest.raises(MediaDecodeError, match="empty"):
        decode_video(b"", fps=1.0, max_frames=4, max_bytes=MB)
    with pytest.raises(MediaDecodeError, match="cannot read"):
        decode_video(tmp_path / "missing.mp4", fps=1.0, max_frames=4, max_bytes=MB)


def test_video_time_limit(make_video) -> None:
    data = make_video(seconds=2.0)
    with pytest.raises(MediaDecodeError, match="time limit"):
        decode_video(data, fps=10.0, max_frames=16, max_bytes=MB, timeout_s=0.0)


def test_sniff_container() -> None:
    assert sniff_container(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 8) == "mov"
    assert sniff_container(b"\x1a\x45\xdf\xa3" + b"\x00" * 8) == "matroska"
    assert sniff_container(b"RIFF\x00\x00\x00\x00AVI LIST") == "avi"
    assert sniff_container(b"RIFF\x00\x00\x00\x00WEBPVP8 ") is None
    assert sniff_container(b"#EXTM3U\n") is None
