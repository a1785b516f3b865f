"""``crossfeed bench encoders``: the production embedder's speed per modality.

Loads the configured embedder (CUDA when present, else CPU), times the model load,
then embeds real corpus material in batches: post texts, clipart pictures and the
corpus' slideshow videos (frames sampled as the pipeline samples them). Decoding is
timed apart from embedding, so the numbers say where the time goes. Each modality
is measured ``repeats`` times after one warm-up batch; the ratios image/text and
video/text compare medians of the same run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from itertools import cycle, islice
from pathlib import Path
from typing import Any

from crossfeed.core.settings import Settings
from crossfeed.corpus.build import CorpusResult
from crossfeed.ops.bench.corpus import modality
from crossfeed.ops.bench.report import BenchReport, Table, ratio, summarize
from crossfeed.ops.exceptions import BenchError

log = logging.getLogger(__name__)


def _take(items: Sequence[Any], n: int) -> list[Any]:
    """``n`` items, cycling through ``items`` when there are fewer."""
    return list(islice(cycle(items), n)) if items else []


def _timed_rates(
    fn: Callable[[], object], count: int, repeats: int, label: str, progress: bool
) -> list[float]:
    from tqdm import tqdm

    rates = []
    for _ in tqdm(range(repeats), desc=f"bench {label}", unit="rep", disable=not progress):
        t0 = time.perf_counter()
        fn()
        rates.append(count / (time.perf_counter() - t0))
    return rates


def _media_bytes(post: Any) -> bytes:
    item = post.media[0]
    return item.inline_bytes() if item.data_base64 else Path(item.path).read_bytes()


def run_encoders_bench(
    settings: Settings,
    corpus: CorpusResult,
    *,
    embedder: Any = None,
    texts: int = 256,
    images: int = 32,
    videos: int = 4,
    repeats: int = 3,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[BenchReport, Any]:
    """Measure load time and texts/images/videos per second; returns (report, embedder).

    The loaded embedder is returned so ``bench all`` can hand it to the API instead of
    loading the models a second time.
    """
    from crossfeed.encoders.model import load_embedder

    if min(texts, images, repeats, batch_size) < 1 or videos < 0:
        raise BenchError("texts, images, repeats and batch size must be >= 1")
    t0 = time.perf_counter()
    emb = embedder or load_embedder(settings, batch_size=batch_size).load()
    load_s = time.perf_counter() - t0
    info = emb.info()
    results: dict[str, Any] = {
        "device": info["device"],
        "model_version": info["version"],
        "dim": info["dim"],
        "text_model": info["text_model"],
        "image_model": info["image_model"],
        "load_s": {"total": load_s, **info["load_seconds"]},
        "preloaded": embedder is not None,
        "batch_size": batch_size,
        "throughput": {},
        "decode_ms": {},
    }
    posts = corpus.posts
    thr = results["throughput"]

    text_items = _take([p.text for p in posts if p.text.strip()], texts)
    emb.embed_texts(text_items[:batch_size])  # warm-up
    rates = _timed_rates(lambda: emb.embed_texts(text_items), texts, repeats, "text", progress)
    thr["text"] = {"unit": "posts/s", "items": texts, "per_s": rates, "summary": summarize(rates)}

    raw = [_media_bytes(p) for p in _take([p for p in posts if modality(p) == "image"], images)]
    decode_ms, pictures = [], []
    for data in raw:
        t = time.perf_counter()
        pictures.append(emb.decode_image(data))
        decode_ms.append((time.perf_counter() - t) * 1000)
    results["decode_ms"]["image"] = summarize(decode_ms)
    emb.embed_images(pictures[: min(4, len(pictures))])  # warm-up
    rates = _timed_rates(lambda: emb.embed_images(pictures), images, repeats, "image", progress)
    thr["image"] = {
        "unit": "images/s",
        "items": images,
        "per_s": rates,
        "summary": summarize(rates),
    }

    clips = [p for p in posts if modality(p) == "video"]
    if videos and clips:
        decode_ms, frame_lists = [], []
        for post in _take(clips, videos):
            t = time.perf_counter()
            frames = emb.decode_video(post.media[0].path)
            decode_ms.append((time.perf_counter() - t) * 1000)
            frame_lists.append([img for _, img in frames])
        results["decode_ms"]["video"] = summarize(decode_ms)
        n_frames = [len(f) for f in frame_lists]
        rates = _timed_rates(
            lambda: emb.embed_videos(frame_lists), videos, repeats, "video", progress
        )
        thr["video"] = {
            "unit": "videos/s",
            "items": videos,
            "distinct_clips": min(videos, len(clips)),
            "frames_per_video": sum(n_frames) / len(n_frames),
            "per_s": rates,
            "summary": summarize(rates),
        }
    text_p50 = thr["text"]["summary"]["p50"]
    results["ratios"] = {
        "image_vs_text": ratio(thr["image"]["summary"]["p50"], text_p50),
        "video_vs_text": ratio(thr["video"]["summary"]["p50"], text_p50)
        if "video" in thr
        else None,
    }
    params = {"texts": texts, "images": images, "videos": videos, "repeats": repeats}
    return build_report(results, **params, batch_size=batch_size), emb


def build_report(results: dict[str, Any], **parameters: Any) -> BenchReport:
    thr = results["throughput"]
    table = Table(
        f"Embedding throughput on {results['device']} (batch {results['batch_size']})",
        ["modality", "unit", "n", "min", "median", "max", "vs text (median)"],
    )
    for name in ("text", "image", "video"):
        if name in thr:
            s = thr[name]["summary"]
            rel = results["ratios"].get(f"{name}_vs_text") if name != "text" else 1.0
            table.add(name, thr[name]["unit"], s["n"], s["min"], s["p50"], s["max"], rel)
    load = results["load_s"]
    loads = Table(
        "Model load (seconds)",
        ["total", "text tower", "image tower", "heads", "head version"],
        [
            [
                load["total"],
                load.get("text"),
                load.get("image"),
                load.get("heads"),
                results["model_version"],
            ]
        ],
    )
    decode = Table("Decoding before embedding (ms per item)", ["media", "n", "median", "p95"])
    for name, s in results["decode_ms"].items():
        decode.add(name, s["n"], s["p50"], s["p95"])
    notes = [
        "Rates exclude decoding; videos are embedded as their sampled frames "
        f"({thr.get('video', {}).get('frames_per_video', 0):.1f} frames per clip on "
        "average), pooled into one vector.",
        "Ratios compare medians measured in this run; absolute numbers depend on the "
        "machine and on whatever else ran on it (see the load average).",
    ]
    if results["preloaded"]:
        notes.append("The embedder was loaded earlier in this process; load times are from then.")
    return BenchReport(
        name="encoders",
        title="crossfeed bench: encoders",
        parameters=parameters,
        results=results,
        tables=[table, loads, decode],
        notes=notes,
    )
