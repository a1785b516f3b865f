"""Tower features for (media, text) pairs of a JSONL file of posts, with a cache.

Each post contributes one pair per image or video it carries: the media's
tower features (videos: mean of sampled frames) and the tower features of the
post's text. Features are cached in an ``.npz`` keyed by a content hash (the
tower identity plus the text, or the media bytes), so re-running on a grown
corpus only computes what is new.

Media are read from ``path`` (resolved against the JSONL's directory, and
required to stay under an allowed root) or ``data_base64``; URL media are not
fetched here and are counted as skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from pydantic import ValidationError

from crossfeed.core.schema import MediaItem, Post
from crossfeed.encoders.exceptions import MediaDecodeError, TrainingError

if TYPE_CHECKING:
    from crossfeed.encoders.model import SharedSpaceEmbedder

log = logging.getLogger(__name__)

# Bump when preprocessing changes, so stale cached features are not reused.
CACHE_FORMAT = "feat-v1"
_CHUNK = 64  # pairs decoded and embedded together; bounds memory for decoded media


@dataclass
class PairFeatures:
    """Aligned rows: ``image[i]`` (media features) belongs with ``text[i]``."""

    post_ids: list[str]
    media_refs: list[str]
    modalities: list[str]
    image: np.ndarray
    text: np.ndarray
    data_hash: str
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.post_ids)


class FeatureCache:
    """content-hash -> feature vector, persisted as one ``.npz`` file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._data: dict[str, np.ndarray] = {}
        self.hits = 0
        self.misses = 0
        if path is not None and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as npz:
                    keys, sizes, flat = npz["keys"], npz["sizes"], npz["flat"]
                offsets = np.concatenate([[0], np.cumsum(sizes)])
                for i, key in enumerate(keys):
                    self._data[str(key)] = flat[offsets[i] : offsets[i + 1]]
            except (OSError, KeyError, ValueError) as exc:
                log.warning("ignoring unreadable feature cache %s: %s", path, exc)
                self._data = {}

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __getitem__(self, key: str) -> np.ndarray:
        return self._data[key]

    def put(self, key: str, value: np.ndarray) -> None:
        self._data[key] = np.asarray(value, dtype=np.float32).reshape(-1)

    def save(self) -> None:
        """Write atomically (temp file + rename): an interrupted run keeps the old cache."""
        if self.path is None:
            return
        keys = sorted(self._data)
        vectors = [self._data[k] for k in keys]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            np.savez(
                fh,
                keys=np.array(keys, dtype=str),
                sizes=np.array([v.size for v in vectors], dtype=np.int64),
                flat=np.concatenate(vectors) if vectors else np.zeros(0, np.float32),
            )
        os.replace(tmp, self.path)


def iter_posts(posts_jsonl: Path, skipped: dict[str, int] | None = None) -> Iterator[Post]:
    """Valid posts of a JSONL file; invalid lines are logged and counted, not fatal."""
    with Path(posts_jsonl).open("r", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield Post.model_validate_json(line)
            except ValidationError as exc:
                if skipped is not None:
                    skipped["invalid_post"] = skipped.get("invalid_post", 0) + 1
                reason = exc.errors()[:1]
                log.warning("%s:%d: invalid post skipped: %s", posts_jsonl, lineno, reason)


def training_text(post: Post) -> str:
    """The text a post's media is paired with: its text, else its hashtags."""
    text = post.text.strip()
    if text:
        return text
    return " ".join(f"#{tag.lstrip('#')}" for tag in post.tags).strip()


def read_media_bytes(
    item: MediaItem, base_dir: Path, roots: Sequence[Path], max_bytes: int
) -> bytes | None:
    """The media's bytes, or None for URL media. Paths must stay under ``roots``."""
    if item.data_base64 is not None:
        try:
            data = item.inline_bytes()
        except ValueError as exc:
            raise MediaDecodeError(str(exc)) from exc
        if len(data) > max_bytes:
            raise MediaDecodeError(f"inline media is {len(data)} bytes, over {max_bytes}")
        return data
    if item.path is not None:
        path = (base_dir / item.path).resolve()
        if not any(path.is_relative_to(root.resolve()) for root in roots):
            raise MediaDecodeError(f"media path {item.path!r} is outside the allowed media roots")
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise MediaDecodeError(f"cannot read media {item.path!r}: {exc}") from exc
        if not path.is_file() or size > max_bytes:
            raise MediaDecodeError(f"media {item.path!r} is not a file or over {max_bytes} bytes")
        return path.read_bytes()
    return None


def _key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") if isinstance(part, str) else part)
        digest.update(b"\x00")
    return digest.hexdigest()


@dataclass
class _Pending:
    post_id: str
    ref: str
    modality: str
    text: str
    text_key: str
    media_key: str
    data: bytes


def extract_features(
    posts_jsonl: Path,
    embedder: SharedSpaceEmbedder,
    *,
    cache_path: Path | None = None,
    media_roots: Sequence[Path] = (),
    progress: bool = True,
) -> PairFeatures:
    """Tower features of every (media, text) pair in ``posts_jsonl``.

    ``cache_path`` defaults to ``<posts_jsonl>.features.npz``; ``media_roots``
    are allowed in addition to the JSONL's own directory.
    """
    from tqdm import tqdm

    posts_jsonl = Path(posts_jsonl)
    base_dir = posts_jsonl.parent.resolve()
    roots = [base_dir, *[Path(r) for r in media_roots]]
    cache = FeatureCache(cache_path or posts_jsonl.with_name(posts_jsonl.name + ".features.npz"))
    s = embedder.settings
    text_id = f"{CACHE_FORMAT}|text|{embedder.tower_id('text')}"
    image_id = f"{CACHE_FORMAT}|image|{embedder.tower_id('image')}"
    video_id = f"{image_id}|video|{s.video_fps}|{s.video_max_frames}"

    skipped: dict[str, int] = {}
    rows: list[tuple[str, str, str, str, str]] = []  # post, ref, modality, text key, media key
    chunk: list[_Pending] = []

    def count(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    with posts_jsonl.open("rb") as fh:
        total = sum(1 for _ in fh)
    bar = tqdm(iter_posts(posts_jsonl, skipped), total=total, unit="post", disable=not progress)
    for post in bar:
        text = training_text(post)
        if not text:
            count("no_text")
            continue
        for item in post.media:
            try:
                data = read_media_bytes(item, base_dir, roots, s.max_media_bytes)
            except MediaDecodeError as exc:
                count("media_unreadable")
                log.warning("post %s: %s", post.id, exc)
                continue
            if data is None:
                count("url_media_not_fetched")
                continue
            media_id = image_id if item.kind == "image" else video_id
            chunk.append(
                _Pending(
                    post.id,
                    item.reference(),
                    item.kind,
                    text,
                    _key(text_id, text),
                    _key(media_id, data),
                    data,
                )
            )
        if len(chunk) >= _CHUNK:
            rows.extend(_embed_chunk(chunk, embedder, cache, count))
            chunk = []
    if chunk:
        rows.extend(_embed_chunk(chunk, embedder, cache, count))
    cache.save()
    log.info(
        "features: %d pairs, cache %d hits / %d misses, skipped %s",
        len(rows),
        cache.hits,
        cache.misses,
        skipped or "nothing",
    )
    if not rows:
        raise TrainingError(f"no usable (media, text) pairs in {posts_jsonl}; skipped {skipped}")
    image = np.stack([cache[r[4]] for r in rows])
    text_feats = np.stack([cache[r[3]] for r in rows])
    data_hash = _key(*(f"{r[0]}|{r[3]}|{r[4]}" for r in sorted(rows)))
    return PairFeatures(
        post_ids=[r[0] for r in rows],
        media_refs=[r[1] for r in rows],
        modalities=[r[2] for r in rows],
        image=image.astype(np.float32),
        text=text_feats.astype(np.float32),
        data_hash=data_hash,
        skipped=skipped,
    )


def _embed_chunk(
    chunk: list[_Pending],
    embedder: SharedSpaceEmbedder,
    cache: FeatureCache,
    count: Callable[[str], None],
) -> list[tuple[str, str, str, str, str]]:
    """Fill the cache for a chunk's misses in batches; return the rows that succeeded."""
    ok: list[_Pending] = []
    images: list[Image.Image] = []
    videos: list[list[Image.Image]] = []
    image_keys: list[str] = []
    video_keys: list[str] = []
    for p in chunk:
        if p.media_key in cache or p.media_key in image_keys or p.media_key in video_keys:
            cache.hits += 1
            ok.append(p)
            continue
        cache.misses += 1
        try:
            if p.modality == "image":
                images.append(embedder.decode_image(p.data))
                image_keys.append(p.media_key)
            else:
                videos.append([frame for _, frame in embedder.decode_video(p.data)])
                video_keys.append(p.media_key)
        except MediaDecodeError as exc:
            count("media_decode")
            log.warning("post %s media %s: %s", p.post_id, p.ref, exc)
            continue
        ok.append(p)
    if images:
        for key, vec in zip(image_keys, embedder.image_features(images), strict=True):
            cache.put(key, vec)
    if videos:
        for key, vec in zip(video_keys, embedder.video_features(videos), strict=True):
            cache.put(key, vec)
    missing_text = {p.text_key: p.text for p in ok if p.text_key not in cache}
    if missing_text:
        keys = list(missing_text)
        feats = embedder.text_features([missing_text[k] for k in keys])
        for key, vec in zip(keys, feats, strict=True):
            cache.put(key, vec)
    return [(p.post_id, p.ref, p.modality, p.text_key, p.media_key) for p in ok]
