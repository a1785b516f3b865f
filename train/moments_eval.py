"""``crossfeed eval moments``: does a text query find the right part of a video?

Spaces are fitted on the clipart training split exactly as ``eval clipart``
fits them (the tag-posterior space, or the ridge baseline). Synthetic social
videos are composed from still pictures (:mod:`.moments_data`): three
segments of three different top-level categories, 2-6 s each, encoded as
real MP4s, decoded at the production sampling settings and cut into moments
with :func:`~crossfeed.encoders.moments.segment_moments`. Each category of a
video is asked for with its topic word; :mod:`.moments_metrics` scores the
moment the query picks against the true segment, beside a random moment and
the whole video, and reports topic-word retrieval over moments and over
whole videos.

The moment window is swept on validation videos only: pictures of a
carve-out of the training split, with the space refitted on the rest of it
(as ``eval clipart`` chooses the stream step's ``min_score``). Test videos,
made of test pictures only, are scored at the chosen window and at the
configured default. Video composition is seeded; numbers are mean ± sd over
seeds (the spaces are fitted once, with the first seed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossfeed.exceptions import InvalidInputError
from crossfeed.train.moments_data import SampledVideo
from crossfeed.train.moments_metrics import choose_window, evaluate

if TYPE_CHECKING:
    from crossfeed.core.settings import Settings
    from crossfeed.encoders.model import SharedSpaceEmbedder
    from crossfeed.train.clipart_data import ClipartSplit
    from crossfeed.train.clipart_methods import Space

log = logging.getLogger(__name__)

SPACES: tuple[str, ...] = ("tags", "ridge")
WINDOWS_S: tuple[float, ...] = (2.0, 3.0, 4.0, 6.0, 8.0)
VALIDATION_FRACTION = 0.2  # of the training pictures, as eval clipart carves its validation

Embed = Callable[[np.ndarray], np.ndarray]


@dataclass
class MomentsEvalOptions:
    out_dir: Path
    clipart_dir: Path  # eval clipart's output dir: its corpus/ and feature cache/ are reused
    default_window_s: float
    corpus: Path | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    videos: int = 150
    windows_s: tuple[float, ...] = WINDOWS_S
    spaces: tuple[str, ...] = ("tags",)
    split_seed: int = 0
    progress: bool = True
    plot: bool = True


@dataclass
class SpaceSide:
    """One side of the study: a fitted space's heads, its topic-word queries, its videos."""

    embed: Embed
    queries: np.ndarray  # (n_categories, dim)
    videos: dict[int, list[SampledVideo]]  # seed -> videos


def over_seeds(
    side: SpaceSide, window_s: float
) -> tuple[dict[str, dict[str, float]], list[dict[str, float]]]:
    """Metrics of every seed's videos at ``window_s``: (mean ± sd per key, the runs)."""
    from crossfeed.train.clipart_report import aggregate

    runs = [evaluate(vs, window_s, side.embed, side.queries) for vs in side.videos.values()]
    return aggregate(runs), runs


def compare_windows(
    validation: SpaceSide, test: SpaceSide, windows_s: Sequence[float], default_s: float
) -> dict[str, Any]:
    """Choose the window on ``validation`` alone, then score ``test`` at it and the default.

    ``test_sweep`` scores the test videos at every window for the record; it
    is computed after the choice and never read by it.
    """
    sweep = {float(w): over_seeds(validation, w)[0] for w in windows_s}
    chosen = choose_window(sweep, default_s)
    test_at: dict[str, Any] = {}
    for w in dict.fromkeys((chosen, float(default_s))):
        summary, runs = over_seeds(test, w)
        test_at[f"{w:g}"] = {"summary": summary, "runs": runs}
    test_sweep = {f"{float(w):g}": over_seeds(test, w)[0]["r1@0.5"] for w in windows_s}
    return {
        "chosen_window_s": chosen,
        "default_window_s": float(default_s),
        "validation_sweep": {f"{w:g}": s for w, s in sweep.items()},
        "test": test_at,
        "test_sweep_r1": test_sweep,
    }


def _fit_space(
    name: str, split: ClipartSplit, seed: int, opts: MomentsEvalOptions, chosen: dict[str, Any]
) -> Space:
    """Fit ``name`` on ``split.train`` exactly as ``eval clipart`` does."""
    from crossfeed.encoders.vocab import TagVocab
    from crossfeed.train.clipart import ClipartEvalOptions, fit_space

    vocab = TagVocab().fit(split.train.tags)
    y = vocab.transform(split.train.tags)
    copts = ClipartEvalOptions(
        out_dir=opts.out_dir, seeds=(seed,), methods=(name,), progress=opts.progress
    )
    return fit_space(name, split, vocab, y, seed, copts, chosen, plot=False)


def run_moments_eval(
    opts: MomentsEvalOptions, settings: Settings, embedder: SharedSpaceEmbedder | None = None
) -> dict[str, Any]:
    """Run the whole study; returns the JSON-able report (also written to ``out_dir``)."""
    from crossfeed.encoders.model import load_embedder
    from crossfeed.train import moments_data as md
    from crossfeed.train.clipart_data import ensure_corpus, load_split, validation_split
    from crossfeed.train.train_data import text_features_cached

    unknown = sorted(set(opts.spaces) - set(SPACES))
    if unknown or not opts.spaces or not opts.seeds or opts.videos < 1 or not opts.windows_s:
        raise InvalidInputError(
            f"spaces must be some of {SPACES}; seeds, windows and videos non-empty"
        )
    started = time.monotonic()
    timing: dict[str, float] = {}
    out = opts.out_dir
    out.mkdir(parents=True, exist_ok=True)
    embedder = embedder or load_embedder(settings)
    getattr(embedder, "device", None)  # sets torch's CPU threads
    cache = opts.clipart_dir / "cache"
    posts_path = ensure_corpus(opts.corpus, opts.clipart_dir, progress=opts.progress)
    split = load_split(
        posts_path,
        embedder,
        extra_media_roots=settings.stream.media_roots,
        cache_dir=cache,
        split_seed=opts.split_seed,
        progress=opts.progress,
    )
    val = validation_split(split, VALIDATION_FRACTION, opts.split_seed)
    topic_text = text_features_cached(embedder, split.topic_words, cache / "topics.npz")
    timing["corpus_and_features"] = time.monotonic() - started

    enc = settings.encoder
    frames = md.CachedFrameFeatures(
        embedder.image_features,
        f"image|{embedder.tower_id('image')}",
        out / "cache" / "frames.features.npz",
    )
    decode = md.production_decoder(enc)
    pools = {
        "test": md.PicturePool(split, enc.max_media_bytes, enc.max_image_pixels, md.DEFAULT_SIZE),
        "validation": md.PicturePool(
            val, enc.max_media_bytes, enc.max_image_pixels, md.DEFAULT_SIZE
        ),
    }
    videos: dict[str, dict[int, list[SampledVideo]]] = {"test": {}, "validation": {}}
    t0 = time.monotonic()
    for seed in opts.seeds:
        for side, stream in (("test", 0), ("validation", 1)):
            pool = pools[side]
            specs = md.compose_specs(
                pool.labels, opts.videos, np.random.default_rng([seed, stream])
            )
            videos[side][seed] = md.sample_videos(
                specs, pool, decode, frames, progress=opts.progress, desc=f"{side} seed {seed}"
            )
        frames.save()
    timing["videos"] = time.monotonic() - t0
    log.info("frame features: %d cache hits, %d misses", frames.cache.hits, frames.cache.misses)

    report: dict[str, Any] = {
        "split": {
            "train_pairs": len(split.train),
            "test_pictures": len(pools["test"]),
            "validation_pictures": len(pools["validation"]),
            "validation_fit_pairs": len(val.train),
            "categories": len(split.categories),
        },
        "videos": {
            "per_seed": opts.videos,
            "segments": md.SEGMENTS_PER_VIDEO,
            "segment_s": list(md.DEFAULT_DURATIONS_S),
            "encode_fps": md.DEFAULT_ENCODE_FPS,
            "size_px": md.DEFAULT_SIZE,
            "sample_fps": enc.video_fps,
            "max_frames": enc.video_max_frames,
            "frame_cache": {"hits": frames.cache.hits, "misses": frames.cache.misses},
        },
        "seeds": list(opts.seeds),
        "windows_s": [float(w) for w in opts.windows_s],
        "spaces": {},
    }
    first_space: tuple[str, Space, float] | None = None
    for name in opts.spaces:
        t0 = time.monotonic()
        chosen: dict[str, Any] = {}
        space = _fit_space(name, split, opts.seeds[0], opts, chosen)
        # The validation space never sees the validation pictures (eval clipart's carve-out).
        val_space = _fit_space(name, val, opts.seeds[0], opts, dict(chosen))
        result = compare_windows(
            SpaceSide(
                val_space.embed_image, val_space.embed_text(topic_text), videos["validation"]
            ),
            SpaceSide(space.embed_image, space.embed_text(topic_text), videos["test"]),
            opts.windows_s,
            opts.default_window_s,
        )
        result["info"] = {k: v for k, v in space.info.items() if k != "vocab_tags"}
        report["spaces"][name] = result
        timing[f"space_{name}"] = time.monotonic() - t0
        if first_space is None:
            first_space = (name, space, result["chosen_window_s"])
    from crossfeed.train import moments_report as mr

    report["tables"] = mr.tables(report)
    files: dict[str, str] = {}
    if opts.plot and first_space is not None:
        name, space, window = first_space
        video = videos["test"][opts.seeds[0]][0]
        path = mr.filmstrip(
            out / "filmstrip.png",
            video,
            window,
            space.embed_image,
            space.embed_text(topic_text),
            split.categories,
            picture=pools["test"],
            title=f"{name} space, window {window:g} s (chosen on validation), test video",
        )
        files["filmstrip"] = str(path)
    report["files"] = files
    timing["total"] = time.monotonic() - started
    report["timing_s"] = {k: round(v, 1) for k, v in timing.items()}
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "results.md").write_text("\n\n".join(report["tables"].values()) + "\n")
    return report


# ---------------------------------------------------------------------- command


def _numbers(kind: type) -> Callable[[str], tuple[Any, ...]]:
    def parse(value: str) -> tuple[Any, ...]:
        try:
            items = tuple(kind(v) for v in value.split(",") if v.strip())
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a comma list, got {value!r}") from exc
        if not items:
            raise argparse.ArgumentTypeError("give at least one value")
        return items

    return parse


def add_moments_eval(eval_sub: argparse._SubParsersAction) -> None:
    """Register ``moments`` under the ``eval`` command's sub-parsers."""
    p = eval_sub.add_parser(
        "moments",
        help="video-moment alignment: does a text query find the right part of a video?",
        description="Synthetic 3-segment videos from clipart test pictures; a topic-word query "
        "per segment; R@1 at IoU>=0.5, mean IoU and hit of the best moment vs a random "
        "moment and the whole video; the moment window chosen on validation videos.",
    )
    p.add_argument("--seeds", type=_numbers(int), default=(0, 1, 2), help="video seeds")
    p.add_argument("--videos", type=int, default=150, help="test (and validation) videos/seed")
    p.add_argument(
        "--window-s", type=float, default=None, help="default window to report (settings')"
    )
    p.add_argument(
        "--windows", type=_numbers(float), default=WINDOWS_S, help="windows swept on validation"
    )
    p.add_argument("--space", default="tags", help=f"space or comma list: {', '.join(SPACES)}")
    p.add_argument("--out", type=Path, default=None, help="output dir (<state>/eval/moments)")
    p.add_argument(
        "--clipart-dir",
        type=Path,
        default=None,
        help="eval clipart's output dir, whose corpus and feature cache are reused "
        "(<state>/eval/clipart)",
    )
    p.add_argument("--corpus", type=Path, default=None, help="corpus dir (default: build one)")
    p.add_argument("--no-plot", action="store_true", help="skip the filmstrip PNG")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_moments)


def _cmd_moments(args: argparse.Namespace) -> int:
    from crossfeed.core.settings import Settings

    settings = Settings()
    if args.videos < 1:
        raise InvalidInputError("--videos must be >= 1")
    if any(w <= 0 for w in args.windows) or (args.window_s is not None and args.window_s <= 0):
        raise InvalidInputError("windows must be positive seconds")
    state = settings.state.state_dir / "eval"
    opts = MomentsEvalOptions(
        out_dir=args.out or state / "moments",
        clipart_dir=args.clipart_dir or state / "clipart",
        default_window_s=args.window_s or settings.encoder.video_moment_s or 4.0,
        corpus=args.corpus,
        seeds=args.seeds,
        videos=args.videos,
        windows_s=args.windows,
        spaces=tuple(s.strip() for s in args.space.split(",") if s.strip()),
        progress=not args.no_progress and sys.stderr.isatty(),
        plot=not args.no_plot,
    )
    report = run_moments_eval(opts, settings)
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "tables"}))
        return 0
    v = report["videos"]
    print(
        f"moments: {v['per_seed']} test + {v['per_seed']} validation videos per seed "
        f"(seeds {report['seeds']}), {v['segments']} segments of {v['segment_s'][0]:g}-"
        f"{v['segment_s'][1]:g} s, sampled at {v['sample_fps']:g} fps (max {v['max_frames']})\n"
    )
    print("\n\n".join(report["tables"].values()))
    for name, path in report["files"].items():
        print(f"\n{name}: {path}")
    return 0
