"""Options of ``crossfeed bench soak`` (and of the soak part of ``bench all``).

``bench soak`` takes ``--duration``, ``--rate`` ...; ``bench all`` takes the same with a
``soak-`` prefix (``--soak-duration`` ...), so they cannot clash with other parts' flags.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crossfeed.ops.exceptions import BenchError

OPTIONS: tuple[tuple[str, Any, str], ...] = (
    ("duration", 600.0, "seconds of load (default 600)"),
    ("warmup", None, "seconds not judged at the start (default: a quarter, <= 120)"),
    ("rate", "auto", "posts/s, or auto: half the maximum measured with --burst"),
    ("burst", 300, "posts of the max-rate burst with --rate auto (default 300)"),
    ("search-rate", 2.0, "text searches per second against the API (default 2)"),
    ("image-every", 20, "every Nth post carries a corpus picture; 0: text only"),
    ("sample", 5.0, "seconds between RSS samples (default 5)"),
    ("drain", 180.0, "seconds to wait for the last posts after the load (default 180)"),
    ("limit", 40, "corpus pictures to draw the picture posts from (default 40)"),
)


def add_soak_parser(
    bsub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """The ``bench soak`` sub-command with ``common`` options and its own."""
    p = bsub.add_parser("soak", help="memory under half load: RSS of a worker and the API")
    common(p)
    add_soak_args(p)
    return p


def add_soak_args(p: Any, *, prefix: str = "") -> None:  # a parser or an argument group
    for name, default, help_ in OPTIONS:
        kind = str if name in ("rate", "warmup") else type(default)
        p.add_argument(f"--{prefix}{name}", type=kind, default=default, help=help_)


def soak_config(args: argparse.Namespace, *, prefix: str = "") -> Any:
    from crossfeed.ops.bench.soak import SoakConfig

    def get(name: str) -> Any:
        return getattr(args, (prefix + name).replace("-", "_"))

    rate = str(get("rate"))
    try:
        cfg = SoakConfig(
            duration_s=float(get("duration")),
            warmup_s=None if get("warmup") in (None, "auto") else float(get("warmup")),
            rate=None if rate == "auto" else float(rate),
            burst=int(get("burst")),
            search_rate=float(get("search-rate")),
            image_every=int(get("image-every")),
            sample_s=float(get("sample")),
            drain_s=float(get("drain")),
            seed=int(args.seed),
        )
    except ValueError as exc:
        raise BenchError(f"--{prefix}rate/--{prefix}warmup take a number or auto: {exc}") from exc
    try:
        cfg.check()
    except BenchError as exc:
        if not prefix:
            raise
        raise BenchError(f"{exc} (here: the --{prefix}* options)") from exc
    return cfg


def run_soak_part(
    args: argparse.Namespace, base: Any, out: Path, *, progress: bool, prefix: str = ""
) -> Any:
    """Check the options, build (or reuse) the picture corpus when pictures are wanted,
    and run the soak; returns its report."""
    from crossfeed.ops.bench.soak import run_soak

    cfg = soak_config(args, prefix=prefix)
    images: list[Any] = []
    roots: list[Path] = []
    if cfg.image_every:
        from crossfeed.ops.bench.corpus import bench_corpus, modality

        limit = int(getattr(args, (prefix + "limit").replace("-", "_")))
        if limit < 1:
            raise BenchError(f"--{prefix}limit must be >= 1 (or --{prefix}image-every 0)")
        corpus = bench_corpus(
            out, limit=limit, seed=args.seed, video_fraction=0.0, progress=progress
        )
        images = [p for p in corpus.posts if modality(p) == "image"]
        roots = list(corpus.media_roots)
        if not images:
            raise BenchError("the bench corpus has no picture post")
    return run_soak(base, out, cfg, images, roots, progress=progress)
