"""Decompression bombs, built in memory: small files whose headers claim huge pixels or
frame counts. For tests, and for checking that a deployment's limits refuse them
(``decode_image`` / ``decode_video`` must raise ``MediaDecodeError`` without decoding).

Each builder returns the file's bytes. None writes to disk or needs anything beyond
Pillow and PyAV (the video builder needs an H.264 encoder: libx264, built into PyAV).
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_bomb(width: int, height: int, *, complete: bool = True) -> bytes:
    """A 1-bit grey PNG of ``width`` x ``height`` zeros (Pillow holds it as one byte per
    pixel). ``complete=False`` stops after a few rows: only the header is trustworthy,
    which is all a limit check may read (100 000 x 100 000 in a few hundred bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    rows = height if complete else min(height, 4)
    data = b"".join(comp.compress(row) for _ in range(rows)) + comp.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def apng_bomb(frames: int) -> bytes:
    """A 2-frame animated PNG whose ``acTL`` chunk declares ``frames`` frames."""
    buf = io.BytesIO()
    first, second = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    first.save(buf, format="PNG", save_all=True, append_images=[second], duration=10)
    data = bytearray(buf.getvalue())
    at = data.find(b"acTL")
    struct.pack_into(">I", data, at + 4, frames)
    struct.pack_into(">I", data, at + 12, zlib.crc32(bytes(data[at : at + 12])) & 0xFFFFFFFF)
    return bytes(data)


def jpeg_bomb(width: int, height: int) -> bytes:
    """An 8 x 8 baseline JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_bomb(frames: int, width: int = 1, height: int = 1) -> bytes:
    """A GIF of ``frames`` 1 x 1 frames on a ``width`` x ``height`` screen (a few bytes a
    frame: 100 000 frames in 2.3 MB)."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = (
        b"\x21\xf9\x04\x04\x01\x00\x00\x00"  # graphic control: 1/100 s
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00"  # LZW: one pixel
    )
    return b"GIF89a" + screen + frame * frames + b"\x3b"


def webp_bomb(frames: int = 2, canvas: tuple[int, int] | None = None) -> bytes:
    """An animated WebP of ``frames`` 1 x 1 frames; ``canvas`` rewrites the canvas size
    its VP8X header declares (frames stay 1 x 1)."""
    images = [Image.new("RGB", (1, 1), (i % 256, 0, 0)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(
        buf, format="WEBP", save_all=True, append_images=images[1:], duration=10, lossless=True
    )
    data = bytearray(buf.getvalue())
    if canvas is not None:
        assert data[12:16] == b"VP8X"
        width, height = canvas
        data[24:27] = (width - 1).to_bytes(3, "little")
        data[27:30] = (height - 1).to_bytes(3, "little")
    return bytes(data)


def h264_bomb(width: int, height: int, frames: int = 2, container: str = "mp4") -> bytes:
    """A real H.264 video of black ``width`` x ``height`` frames: a 4096 x 4096 clip is
    ~50 KB, one decoded frame 24 MiB. Encoding it costs the caller about one second and
    a few hundred MB, once."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "51"}
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        for _ in range(frames):
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()
