"""Thumbnails of post media: made once in the stream, stored in Redis, served by the API.

The embed stage already holds every decoded image and video frame; it makes a small
JPEG of each image, of each video (its middle frame) and of each video moment (the
moment's middle frame) and stores them under ``<prefix>:thumb:<post>:<item>[:m<k>]``
with a TTL (``CROSSFEED_THUMB_TTL``, 7 days by default: about the life of a post in
a live dashboard; a post older than that shows no picture). Every API process reads
the same keys; the API never fetches a URL to make one.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from PIL import Image

from crossfeed.live.exceptions import LiveUnavailableError
from crossfeed.live.keys import LiveKeys

log = logging.getLogger(__name__)

JPEG_MIME = "image/jpeg"


def make_thumbnail(image: Image.Image, *, max_px: int = 256, max_bytes: int = 32 * 1024) -> bytes:
    """``image`` as a JPEG at most ``max_px`` on its long side and ``max_bytes`` long.

    Quality steps down (then the size) until it fits; transparency is flattened on white.
    """
    img = image
    if img.mode in ("RGBA", "LA", "P"):
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba.getchannel("A"))
    elif img.mode != "RGB":
        img = img.convert("RGB")
    side = max_px
    while True:
        thumb = img.copy()
        thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
        for quality in (85, 70, 55, 40):
            buf = io.BytesIO()
            thumb.save(buf, format="JPEG", quality=quality, optimize=True)
            if buf.tell() <= max_bytes:
                return buf.getvalue()
        if side <= 32:
            return buf.getvalue()  # a 32 px JPEG at quality 40 is far below any sane cap
        side = int(side * 0.75)


@dataclass(frozen=True)
class Thumbnail:
    post_id: str
    item: int
    moment: int | None
    jpeg: bytes


class ThumbnailWriter:
    """The embed stage's writer (blocking client; runs in the stage's threads)."""

    def __init__(self, client: redis.Redis, prefix: str, *, ttl_s: int) -> None:
        self._client = client
        self._keys = LiveKeys(prefix)
        self._ttl = int(ttl_s)

    @classmethod
    def from_url(cls, url: str, prefix: str, *, ttl_s: int) -> ThumbnailWriter:
        client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
        return cls(client, prefix, ttl_s=ttl_s)

    def put(self, thumbs: Sequence[Thumbnail]) -> None:
        if not thumbs:
            return
        pipe = self._client.pipeline(transaction=False)
        for t in thumbs:
            pipe.set(self._keys.thumb(t.post_id, t.item, t.moment), t.jpeg, ex=self._ttl)
        try:
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise LiveUnavailableError(f"Redis thumbnail write failed: {exc}") from exc

    def close(self) -> None:
        self._client.close()


class ThumbnailReader:
    """The API's reader; failures read as "no thumbnail" (pictures are never essential)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._keys = LiveKeys(prefix)

    async def get(self, post_id: str, item: int, moment: int | None = None) -> bytes | None:
        try:
            raw = await self._client.get(self._keys.thumb(post_id, item, moment))
        except (redis.RedisError, OSError) as exc:
            log.debug("thumbnail read failed: %s", exc)
            return None
        if raw is None:
            return None
        return raw.encode() if isinstance(raw, str) else bytes(raw)

    async def forget(self, post_id: str) -> int:
        """Erasure: delete every thumbnail of ``post_id`` (each media item and moment,
        named exactly: a pattern could also match another post's); how many went."""
        from crossfeed.core.schema import MAX_MEDIA
        from crossfeed.encoders.moments import MAX_MOMENTS

        keys = [
            self._keys.thumb(post_id, item, moment)
            for item in range(1, MAX_MEDIA + 1)
            for moment in (None, *range(MAX_MOMENTS))
        ]
        return int(await self._client.delete(*keys))

    async def existing(
        self, wanted: Sequence[tuple[str, int, int | None]]
    ) -> set[tuple[str, int, int | None]]:
        """Which of ``(post, item, moment)`` have a thumbnail (one round trip)."""
        if not wanted:
            return set()
        try:
            pipe = self._client.pipeline(transaction=False)
            for post_id, item, moment in wanted:
                pipe.exists(self._keys.thumb(post_id, item, moment))
            found = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.debug("thumbnail lookup failed: %s", exc)
            return set()
        return {w for w, f in zip(wanted, found, strict=True) if f}
