"""``crossfeed eval trends --compare-clusterers``: ours against River's stream clusterers.

On the eval corpus' text rows (384-d), in a seeded random order: time per post
(learn + assign), clusters made, and how well clusters follow the corpus' categories
(the share of a category's posts in its largest cluster, and that cluster's purity).
River (``pip install river``) is optional: without it only ours is measured.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from crossfeed.trends.cluster import ClusterParams, OnlineClusterer


def _quality(assign: dict[int, int], labels: Sequence[str]) -> dict[str, float]:
    by_label: dict[str, Counter[int]] = defaultdict(Counter)
    by_cluster: dict[int, Counter[str]] = defaultdict(Counter)
    for i, cid in assign.items():
        by_label[labels[i]][cid] += 1
        by_cluster[cid][labels[i]] += 1
    big = [lab for lab, c in by_label.items() if sum(c.values()) >= 10]
    share, purity = [], []
    for lab in big:
        cid, n = by_label[lab].most_common(1)[0]
        share.append(n / sum(by_label[lab].values()))
        purity.append(by_cluster[cid][lab] / sum(by_cluster[cid].values()))
    return {
        "cluster_ids_used": float(len(by_cluster)),
        "category_share_in_top_cluster": round(float(np.mean(share)), 3) if share else 0.0,
        "top_cluster_purity": round(float(np.mean(purity)), 3) if purity else 0.0,
    }


def _run(
    name: str, learn: Callable[[int, int], int], rows: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    assign: dict[int, int] = {}
    started = time.perf_counter()
    for k, i in enumerate(rows):
        assign[int(i)] = learn(int(i), k)
    seconds = time.perf_counter() - started
    return {
        "clusterer": name,
        "posts": len(rows),
        "us_per_post": round(seconds / max(1, len(rows)) * 1e6, 1),
        **_quality(assign, labels),
    }


def compare_clusterers(
    vectors: np.ndarray,
    labels: Sequence[str],
    *,
    posts: int = 3000,
    river_posts: int = 300,
    seed: int = 0,
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(vectors))[:posts]
    ours = OnlineClusterer(ClusterParams())
    out = [
        _run(
            "crossfeed leader (threshold 0.6, cap 500)",
            lambda i, k: ours.assign(vectors[i], k // 100),
            order,
            labels,
        )
    ]
    try:
        from river import cluster  # type: ignore[import-not-found]
    except ImportError:
        out.append({"clusterer": "river", "skipped": "river is not installed (pip install river)"})
        return out
    feats = {int(i): {j: float(v) for j, v in enumerate(vectors[i])} for i in order[:river_posts]}
    for name, model in (
        (
            "river KMeans(n_clusters=50)",
            cluster.KMeans(n_clusters=50, halflife=0.5, sigma=0.05, seed=seed),
        ),
        (
            "river DBSTREAM(threshold 0.7)",
            cluster.DBSTREAM(clustering_threshold=0.7, fading_factor=0.001),
        ),
    ):

        def learn(i: int, _k: int, model: Any = model) -> int:
            model.learn_one(feats[i])
            return int(model.predict_one(feats[i]))

        out.append(_run(name, learn, order[:river_posts], labels))
    return out
