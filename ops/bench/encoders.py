"""``crossfeed bench encoders``: the production embedder's speed per modality.

Loads the configured embedder (CUDA when present, else CPU), times the model load,
then embeds real corpus material in batches: post texts, clipart pictures and the
corpus' slideshow videos (frames sampled as the pipeline samples them). Decoding is
timed apart from embedding, so the numbers say where the time goes. Each modality
is measured ``repeats`` times after one warm-up batch; the ratios image/text and
video/text compare medians of the same run.

On a CPU the other tower runtime is measured beside the configured one (torch and
ONNX Runtime, :mod:`crossfeed.encoders.runtime`): their repeats alternate, so load
from other processes falls on both alike, and the report gives each modality's
speed-up (ONNX Runtime median / torch median) and how far the runtimes' features
agree (cosine per item).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
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
    fns: dict[str, Callable[[], object]], count: int, repeats: int, label: str, progress: bool
) -> dict[str, list[float]]:
    """Items/s of each function over ``repeats`` rounds, the functions alternating."""
    from tqdm import tqdm

    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in tqdm(range(repeats), desc=f"bench {label}", unit="rep", disable=not progress):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            rates[name].append(count / (time.perf_counter() - t0))
    return rates


def _agreement(a: Any, b: Any) -> dict[str, float]:
    """Cosine per row between two runtimes' features of the same items."""
    import numpy as np

    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min())}


def _other_runtime(settings: Settings, emb: Any, batch_size: int) -> Any:
    """An embedder on the other tower runtime, for the side-by-side figures (None when
    there is none here: not on a CPU, or ONNX Runtime is not installed)."""
    from crossfeed.encoders.model import SharedSpaceEmbedder
    from crossfeed.encoders.runtime import onnxruntime_version

    if emb.device != "cpu":
        return None
    chosen = emb.runtime.name
    if chosen == "torch" and onnxruntime_version() is None:
        return None
    other = "torch" if chosen == "onnx" else "onnx"
    enc = settings.encoder.model_copy(update={"runtime": other})
    return SharedSpaceEmbedder(enc, settings.models_dir, batch_size=batch_size).load()


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
    compare: bool = True,
) -> tuple[BenchReport, Any]:
    """Measure load time and texts/images/videos per second; returns (report, embedder).

    The loaded embedder is returned so ``bench all`` can hand it to the API instead of
    loading the models a second time. ``compare`` measures the other tower runtime
    beside it (on a CPU).
    """
    from crossfeed.encoders.model import load_embedder

    if min(texts, images, repeats, batch_size) < 1 or videos < 0:
        raise BenchError("texts, images, repeats and batch size must be >= 1")
    t0 = time.perf_counter()
    emb = embedder or load_embedder(settings, batch_size=batch_size).load()
    load_s = time.perf_counter() - t0
    info = emb.info()
    other = _other_runtime(settings, emb, batch_size) if compare else None
    from crossfeed.encoders.runtime import cpu_thread_count

    results: dict[str, Any] = {
        "device": info["device"],
        "runtime": info["runtime"],
        "text_runtime": info["text_runtime"],
        "image_runtime": info["image_runtime"],
        "runtime_fallbacks": info["runtime_fallbacks"],
        "cpu_threads": cpu_thread_count(settings.encoder.cpu_threads),
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
    embs = {info["runtime"]: emb} | ({other.runtime.name: other} if other is not None else {})
    side: dict[str, dict[str, Any]] = {name: {} for name in embs}
    agree: dict[str, dict[str, float]] = {}

    def measure(modality: str, call: Callable[[Any], object], count: int) -> list[float]:
        """Rates of every runtime (alternating); the configured one's are returned."""
        rates = _timed_rates(
            {name: partial(call, e) for name, e in embs.items()},
            count,
            repeats,
            modality,
            progress,
        )
        for name, r in rates.items():
            side[name][modality] = summarize(r)
        return rates[info["runtime"]]

    text_items = _take([p.text for p in posts if p.text.strip()], texts)
    for e in embs.values():
        e.embed_texts(text_items[:batch_size])  # warm-up
    rates = measure("text", lambda e: e.embed_texts(text_items), texts)
    thr["text"] = {"unit": "posts/s", "items": texts, "per_s": rates, "summary": summarize(rates)}
    if other is not None:
        agree["text"] = _agreement(emb.text_features(text_items), other.text_features(text_items))

    raw = [_media_bytes(p) for p in _take([p for p in posts if modality(p) == "image"], images)]
    decode_ms, pictures = [], []
    for data in raw:
        t = time.perf_counter()
        pictures.append(emb.decode_image(data))
        decode_ms.append((time.perf_counter() - t) * 1000)
    results["decode_ms"]["image"] = summarize(decode_ms)
    for e in embs.values():
        e.embed_images(pictures[: min(4, len(pictures))])  # warm-up
    rates = measure("image", lambda e: e.embed_images(pictures), images)
    if other is not None:
        agree["image"] = _agreement(emb.image_features(pictures), other.image_features(pictures))
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
        rates = measure("video", lambda e: e.embed_videos(frame_lists), videos)
        if other is not None:
            agree["video"] = _agreement(
                emb.video_features(frame_lists), other.video_features(frame_lists)
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
    if other is not None:
        results["runtimes"] = side
        results["agreement"] = agree
        results["other_load_s"] = other.info()["load_seconds"]
        onnx_emb = other if other.runtime.name == "onnx" else emb
        results["onnx_text_runtime"] = onnx_emb.info()["text_runtime"]
        results["speedup"] = {
            m: ratio(side["onnx"][m]["p50"], side["torch"][m]["p50"]) for m in side["torch"]
        }
        for m, value in results["speedup"].items():
            results[f"{m}_encoder_speedup"] = value
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
    tables = [table, *_runtime_tables(results), loads]
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
        tables=[*tables, decode],
        notes=notes,
    )


def _runtime_tables(results: dict[str, Any]) -> list[Table]:
    """torch and ONNX Runtime side by side, when both were measured."""
    side = results.get("runtimes")
    if not side:
        return []
    units = {m: t["unit"] for m, t in results["throughput"].items()}
    table = Table(
        f"Tower runtimes side by side on cpu, {results['cpu_threads']} thread(s), "
        f"median items/s (text on ONNX Runtime: {results['onnx_text_runtime']})",
        ["modality", "unit", "torch", "onnxruntime", "speed-up", "cosine mean", "cosine min"],
    )
    for m in side["torch"]:
        agree = results["agreement"].get(m, {})
        table.add(
            m,
            units.get(m, ""),
            side["torch"][m]["p50"],
            side["onnx"][m]["p50"],
            results["speedup"][m],
            agree.get("cos_mean"),
            agree.get("cos_min"),
        )
    return [table]
