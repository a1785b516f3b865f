"""``crossfeed corpus``: a realistic, reproducible sample stream of social posts.

Posts are built from a clipart tree (Debian's ``openclipart-png``), one post per
picture, plus ~10% short slideshow videos of one category and ~3% reposts (the same
content again under a new id and author). Captions and hashtags are noisy on purpose
(see :mod:`crossfeed.corpus.text`). Every post records its ground truth in
``metadata`` (``category_path``, ``top_category``, ``source_file``) so an evaluation
can score retrieval by category; :func:`split_posts` splits by source picture so
that nothing leaks between train and test.

Output, all under ``--out``: ``posts.jsonl`` (one :class:`Post` per line),
``corpus.json`` (manifest: counts, seed, media roots) and ``videos/``. Images are
referenced by absolute path, so workers must allow the image root and the output
directory as media roots; the command prints both.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import shutil
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from crossfeed.core.schema import MediaItem, Post
from crossfeed.corpus.io import (
    MANIFEST_FILE,
    POSTS_FILE,
    VIDEOS_DIR,
    atomic_write,
    check_fraction,
    json_dumps,
    make_manifest,
    read_posts,
    split_posts,
    write_posts,
)
from crossfeed.corpus.source import DEFAULT_CLIPART_ROOT, ScanResult, SourceImage, scan_images
from crossfeed.exceptions import InvalidInputError

__all__ = [
    "CorpusResult",
    "build_corpus",
    "default_out_dir",
    "ensure_clipart",
    "read_posts",
    "split_posts",
    "write_posts",
]

log = logging.getLogger(__name__)

GENERATED_DIR = "generated"
SOURCE = "clipart"
# Inline media travel inside the Kafka message (limit ~1 MB); base64 adds a third.
MAX_INLINE_BYTES = 300_000
# Posts start here and are spaced like a busy feed; fixed so a seed gives identical output.
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_MEAN_GAP_S = 45.0


@dataclass(frozen=True)
class CorpusResult:
    out_dir: Path
    posts_path: Path
    manifest_path: Path
    manifest: dict[str, Any]
    posts: list[Post]

    @property
    def media_roots(self) -> list[Path]:
        return [Path(p) for p in self.manifest["media_roots"]]


def default_out_dir() -> Path:
    from crossfeed.core.settings import StateSettings

    return StateSettings().state_dir / "corpus"


def ensure_clipart(root: Path = DEFAULT_CLIPART_ROOT, *, allow_install: bool = True) -> Path | None:
    """``root`` if it exists; else try ``apt-get install openclipart-png`` (root only).

    Returns None, after saying why, when no clipart is available: the caller then
    falls back to a small generated set.
    """
    if root.is_dir():
        return root
    can_install = (
        allow_install
        and root == DEFAULT_CLIPART_ROOT
        and hasattr(os, "geteuid")
        and os.geteuid() == 0
        and shutil.which("apt-get") is not None
    )
    if can_install:
        log.info("installing openclipart-png with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(
                ["apt-get", "install", "-y", "openclipart-png"],
                check=True,
                env=env,
                timeout=1800,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            log.warning("apt-get install openclipart-png failed: %s", exc)
        if root.is_dir():
            return root
    log.warning(
        "no clipart at %s (install Debian's openclipart-png: sudo apt-get install "
        "openclipart-png); falling back to a small generated image set",
        root,
    )
    return None


def _inside(base: Path, path: Path) -> Path:
    """``path`` resolved, refusing anything that escapes ``base`` (links included)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(base):
        raise InvalidInputError(f"refusing to write {resolved}: outside {base}")
    return resolved


def _prepare_out(out_dir: Path, image_root: Path | None) -> Path:
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} exists and is not a directory")
    if out == Path(out.anchor):
        raise InvalidInputError("--out must not be the file system root")
    if image_root is not None and out.is_relative_to(image_root.resolve()):
        raise InvalidInputError(f"--out {out} must not be inside the image root {image_root}")
    out.mkdir(parents=True, exist_ok=True)
    videos = _inside(out, out / VIDEOS_DIR)
    videos.mkdir(exist_ok=True)
    for stale in videos.glob("video_*.mp4"):  # from an earlier build; ours to replace
        stale.unlink()
    return out


def _plan_videos(
    rng: random.Random, images: list[SourceImage], count: int
) -> list[list[SourceImage]]:
    """``count`` groups of 3-6 pictures of one category; a picture is in at most one group."""
    pool: dict[str, list[SourceImage]] = defaultdict(list)
    for img in sorted(images, key=lambda i: i.rel):
        pool[img.category_path].append(img)
    groups: list[list[SourceImage]] = []
    for _ in range(count):
        eligible = sorted(c for c, imgs in pool.items() if len(imgs) >= 3)
        if not eligible:
            break
        category = rng.choices(eligible, weights=[len(pool[c]) for c in eligible])[0]
        size = min(rng.randint(3, 6), len(pool[category]))
        chosen = rng.sample(pool[category], size)
        pool[category] = [i for i in pool[category] if i not in chosen]
        groups.append(chosen)
    return groups


def build_corpus(
    out_dir: Path,
    *,
    clipart_root: Path | None = DEFAULT_CLIPART_ROOT,
    limit: int | None = None,
    video_fraction: float = 0.1,
    inline_fraction: float = 0.05,
    repost_fraction: float = 0.03,
    seed: int = 0,
    progress: bool = True,
    video_size: int = 256,
    video_fps: int = 8,
    max_inline_bytes: int = MAX_INLINE_BYTES,
    fallback_per_category: int = 12,
) -> CorpusResult:
    """Build ``posts.jsonl``, ``corpus.json`` and ``videos/`` under ``out_dir``.

    ``clipart_root`` None or missing = draw a small fallback set under
    ``out_dir/generated``. ``limit`` caps the pictures used (a seeded sample; None or
    0 = all). The same arguments give the same posts (ids, text, order, timestamps).
    """
    from tqdm import tqdm

    from crossfeed.corpus.fallback import generate_images
    from crossfeed.corpus.text import make_handles, make_text
    from crossfeed.corpus.video import pick_codec, write_video

    check_fraction("video fraction", video_fraction, 0.9)
    check_fraction("inline fraction", inline_fraction)
    check_fraction("repost fraction", repost_fraction, 0.5)
    if limit is not None and limit < 0:
        raise InvalidInputError("limit must be >= 0")
    if not 0 <= max_inline_bytes <= 700_000:
        raise InvalidInputError("max_inline_bytes must be between 0 and 700000 (Kafka limit)")
    root = clipart_root if clipart_root is not None and clipart_root.is_dir() else None
    out = _prepare_out(out_dir, root)

    if root is None:
        generated = _inside(out, out / GENERATED_DIR)
        if generated.exists():
            shutil.rmtree(generated)
        root = generate_images(generated, seed=seed, per_category=fallback_per_category)
        source_kind = "generated"
        media_roots = [out]
    else:
        source_kind = "openclipart"
        media_roots = [root.resolve(), out]

    with tqdm(desc="scan images", unit="file", disable=not progress, leave=False) as bar:
        scan: ScanResult = scan_images(root, on_file=bar.update)
    if not scan.images:
        raise InvalidInputError(f"no usable PNG images under {root}")

    rng = random.Random(seed)
    if limit and limit < len(scan.images):
        images = rng.sample(scan.images, limit)
    else:
        images = list(scan.images)
        rng.shuffle(images)
    n_videos = 0
    if video_fraction > 0:
        n_videos = round(video_fraction * len(images) / (1.0 - video_fraction))
    video_groups = _plan_videos(rng, images, n_videos)
    events: list[tuple[str, Any]] = [("image", img) for img in images]
    for planned in video_groups:
        events.insert(rng.randint(0, len(events)), ("video", planned))
    n_reposts = round(repost_fraction * len(events))
    repost_after = Counter(rng.randint(1, len(events)) for _ in range(n_reposts))
    handles = make_handles(rng, 400)
    codec = pick_codec() if video_groups else None

    posts: list[Post] = []
    originals: list[Post] = []
    clock = _EPOCH

    def next_id_and_time() -> tuple[str, datetime]:
        nonlocal clock
        clock += timedelta(seconds=round(rng.expovariate(1.0 / _MEAN_GAP_S), 3))
        return f"clipart-{seed}-{len(posts):06d}", clock

    def emit_reposts(done: int) -> None:
        for _ in range(repost_after.get(done, 0)):
            orig = rng.choice(originals)
            post_id, created = next_id_and_time()
            author = rng.choice([h for h in handles[:50] if h != orig.author])
            meta = {**(orig.metadata or {}), "repost_of": orig.id}
            posts.append(
                orig.model_copy(
                    update={
                        "id": post_id,
                        "author": author,
                        "created_at": created,
                        "metadata": meta,
                    }
                )
            )

    bar = tqdm(events, desc="build posts", unit="post", disable=not progress)
    for done, (kind, item) in enumerate(bar, start=1):
        post_id, created = next_id_and_time()
        if kind == "image":
            img: SourceImage = item
            text = make_text(
                rng,
                subject=img.subject,
                category_path=img.category_path,
                top_category=img.top_category,
                handles=handles,
            )
            inline = rng.random() < inline_fraction and img.size_bytes <= max_inline_bytes
            if inline:
                data = base64.b64encode(img.path.read_bytes()).decode("ascii")
                media = MediaItem(kind="image", data_base64=data, mime="image/png")
            else:
                media = MediaItem(kind="image", path=str(img.path))
            meta: dict[str, Any] = {
                "modality": "image",
                "category_path": img.category_path,
                "top_category": img.top_category,
                "source_file": img.rel,
                "source_files": [img.rel],
                "inline": inline,
            }
            subject_of = img
        else:
            group: list[SourceImage] = item
            head = group[0]
            text = make_text(
                rng,
                subject=head.subject,
                category_path=head.category_path,
                top_category=head.top_category,
                handles=handles,
                video=True,
            )
            seconds = [rng.randint(1, 2) for _ in group]
            dest = _inside(out, out / VIDEOS_DIR / f"video_{len(posts):06d}.mp4")
            info = write_video(
                [g.path for g in group], seconds, dest, size=video_size, fps=video_fps, codec=codec
            )
            media = MediaItem(kind="video", path=str(info.path))
            meta = {
                "modality": "video",
                "category_path": head.category_path,
                "top_category": head.top_category,
                "source_file": head.rel,
                "source_files": [g.rel for g in group],
                "seconds_per_image": seconds,
                "frames": info.frames,
                "fps": info.fps,
                "codec": info.codec,
            }
            subject_of = head
        meta["subject"] = " ".join(subject_of.subject)
        meta["relevant_tags"] = text.relevant_tags
        meta["irrelevant_tags"] = text.irrelevant_tags
        post = Post(
            id=post_id,
            source=SOURCE,
            author=rng.choice(handles),
            created_at=created,
            text=text.text,
            tags=text.tags,
            media=[media],
            lang="en" if rng.random() < 0.8 else None,
            metadata=meta,
        )
        posts.append(post)
        originals.append(post)
        emit_reposts(done)
    bar.close()

    posts_path = _inside(out, out / POSTS_FILE)
    write_posts(posts, posts_path)
    manifest = make_manifest(
        posts,
        scan=scan,
        source_kind=source_kind,
        media_roots=media_roots,
        seed=seed,
        options={
            "limit": limit or None,
            "video_fraction": video_fraction,
            "inline_fraction": inline_fraction,
            "repost_fraction": repost_fraction,
            "video_size": video_size,
            "video_fps": video_fps,
            "video_codec": codec,
            "max_inline_bytes": max_inline_bytes,
        },
    )
    manifest_path = _inside(out, out / MANIFEST_FILE)
    atomic_write(manifest_path, json_dumps(manifest))
    return CorpusResult(out, posts_path, manifest_path, manifest, posts)


# --------------------------------------------------------------------------- CLI
