"""``crossfeed corpus``: build the sample social-post corpus, optionally produce it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from crossfeed.core.settings import KafkaSettings
from crossfeed.corpus.build import build_corpus, default_out_dir, ensure_clipart
from crossfeed.corpus.source import DEFAULT_CLIPART_ROOT
from crossfeed.ops.data.produce import produce


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpus", help="build the sample social-post corpus (clipart + videos)")
    p.add_argument("--out", type=Path, default=None, help="output dir (default <state>/corpus)")
    p.add_argument(
        "--clipart-root",
        type=Path,
        default=DEFAULT_CLIPART_ROOT,
        help=f"clipart PNG tree (default {DEFAULT_CLIPART_ROOT})",
    )
    p.add_argument("--limit", type=int, default=0, help="max images used (default 0 = all)")
    p.add_argument("--video-fraction", type=float, default=0.1, help="share of video posts")
    p.add_argument("--inline-fraction", type=float, default=0.05, help="share of inline images")
    p.add_argument("--repost-fraction", type=float, default=0.03, help="share of reposts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-install", action="store_true", help="never apt-get install clipart")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--produce", action="store_true", help="send the posts to Kafka afterwards")
    p.add_argument("--topic", default=None, help="topic for --produce (default posts.raw)")
    p.set_defaults(func=_cmd_corpus)


def _cmd_corpus(args: argparse.Namespace) -> int:
    root = ensure_clipart(args.clipart_root, allow_install=not args.no_install)
    started = time.monotonic()
    result = build_corpus(
        args.out or default_out_dir(),
        clipart_root=root,
        limit=args.limit or None,
        video_fraction=args.video_fraction,
        inline_fraction=args.inline_fraction,
        repost_fraction=args.repost_fraction,
        seed=args.seed,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    counts = result.manifest["counts"]
    print(
        f"corpus: {counts['posts']} posts ({counts['image_posts']} image, "
        f"{counts['video_posts']} video, {counts['reposts']} reposts) from "
        f"{counts['images_used']} images in {counts['categories']} categories, "
        f"{time.monotonic() - started:.1f} s -> {result.posts_path}"
    )
    print("media roots the workers must allow:")
    for root_path in result.media_roots:
        print(f"  {root_path}")
    roots = json.dumps([str(p) for p in result.media_roots])
    print(f"  CROSSFEED_MEDIA_ROOTS='{roots}'")
    if args.produce:
        sent = produce(result.posts, KafkaSettings(), args.topic, progress=not args.no_progress)
        print(f"produced {sent} posts to {args.topic or KafkaSettings().topic_raw}")
    return 0
