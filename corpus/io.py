"""Corpus files and splits: JSON-lines posts, the manifest, train/test by source picture."""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crossfeed.core.schema import Post
from crossfeed.corpus.source import ScanResult
from crossfeed.exceptions import InvalidInputError

POSTS_FILE = "posts.jsonl"
MANIFEST_FILE = "corpus.json"
VIDEOS_DIR = "videos"


def check_fraction(name: str, value: float, upper: float = 1.0) -> None:
    if not 0.0 <= value <= upper:
        raise InvalidInputError(f"{name} must be between 0 and {upper}, got {value}")


def json_dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_posts(posts: Sequence[Post], path: Path) -> None:
    """Write posts as JSON lines, atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for post in posts:
            fh.write(post.model_dump_json(exclude_none=True))
            fh.write("\n")
    os.replace(tmp, path)


def read_posts(path: Path) -> Iterator[Post]:
    """Posts of a JSON-lines file; a bad line raises with its line number."""
    from pydantic import ValidationError

    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield Post.model_validate_json(line)
            except ValidationError as exc:
                raise InvalidInputError(f"{path}:{lineno}: not a valid post: {exc}") from exc


def make_manifest(
    posts: list[Post],
    *,
    scan: ScanResult,
    source_kind: str,
    media_roots: list[Path],
    seed: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    by_top: dict[str, Counter[str]] = defaultdict(Counter)
    by_path: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    used: set[str] = set()
    for post in posts:
        meta = post.metadata or {}
        kind = "repost" if "repost_of" in meta else meta["modality"]
        by_top[meta["top_category"]][kind] += 1
        counts[f"{kind}_posts"] += 1
        if kind != "repost":
            by_path[meta["category_path"]] += 1
            used.update(meta["source_files"])
            counts["inline_media"] += bool(meta.get("inline"))
            counts["without_relevant_tags"] += not meta["relevant_tags"]
    return {
        "schema_version": 1,
        "created_at": datetime.now(UTC).isoformat(),
        "seed": seed,
        "source": source_kind,
        "image_root": str(scan.root),
        "media_roots": [str(p) for p in media_roots],
        "posts_file": POSTS_FILE,
        "videos_dir": VIDEOS_DIR,
        "options": options,
        "counts": {
            "posts": len(posts),
            "image_posts": counts["image_posts"],
            "video_posts": counts["video_posts"],
            "reposts": counts["repost_posts"],
            "inline_media": counts["inline_media"],
            "without_relevant_tags": counts["without_relevant_tags"],
            "images_available": len(scan.images),
            "images_used": len(used),
            "categories": len(by_path),
            "top_categories": len(by_top),
        },
        "skipped": dict(sorted(scan.skipped.items())),
        "by_top_category": {k: dict(sorted(v.items())) for k, v in sorted(by_top.items())},
        "by_category": dict(sorted(by_path.items())),
    }


def _source_keys(post: Post) -> list[str]:
    meta = post.metadata or {}
    files = meta.get("source_files") or ([meta["source_file"]] if meta.get("source_file") else [])
    keys = [f"file:{f}" for f in files]
    if meta.get("repost_of"):
        keys.append(f"post:{meta['repost_of']}")
    keys.append(f"post:{post.id}")
    return keys


def split_posts(
    posts: Sequence[Post], test_fraction: float, seed: int
) -> tuple[list[Post], list[Post]]:
    """Split posts into (train, test) so that no source picture appears in both.

    Posts sharing a source picture (a picture and its reposts, a video and the posts
    of the pictures it shows) form one group; whole groups go to one side. The test
    side gets about ``test_fraction`` of the posts (whole groups, so slightly more).
    Both lists keep the input order.
    """
    check_fraction("test fraction", test_fraction)
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    post_keys = [_source_keys(p) for p in posts]
    for keys in post_keys:
        first = find(keys[0])
        for key in keys[1:]:
            parent[find(key)] = first
    groups: dict[str, list[int]] = defaultdict(list)
    for index, keys in enumerate(post_keys):
        groups[find(keys[0])].append(index)
    order = sorted(groups, key=lambda g: min(groups[g]))
    random.Random(seed).shuffle(order)
    target = round(test_fraction * len(posts))
    test_idx: set[int] = set()
    for group in order:
        if len(test_idx) >= target:
            break
        test_idx.update(groups[group])
    train = [p for i, p in enumerate(posts) if i not in test_idx]
    test = [p for i, p in enumerate(posts) if i in test_idx]
    return train, test
