"""The Wikipedia cross-modal benchmark (Rasiwasia et al., ACM MM 2010).

2,866 image-text pairs in 10 categories, as fixed features: a 128-bin SIFT
bag-of-visual-words histogram per image and a 10-topic LDA distribution per
text; the standard split is 2,173 train / 693 test. Protocol: every test image
queries all 693 test texts and vice versa; relevant = same category; mAP over
all queries in each direction. ``--seed N`` re-splits the 2,866 pairs at
random with the same sizes, to show a result is not an artefact of one split.

Methods (every hyper-parameter is chosen inside the training split only):

* ``kpm`` (default): kernel posterior matching (:mod:`.posterior`),
  exp-chi-square kernel ridge classifiers per modality, scored by the
  probability that image and text share a category;
* ``linear``: the same with linear (Bhattacharyya) kernels, the strongest
  simple baseline;
* ``cca``: closed-form CCA, cosine in the canonical space (the published
  "CM" baseline);
* ``heads-<objective>``: MLP projection heads trained with one of the survey's
  four objective families (``infonce``, ``supervised``, ``pairwise``,
  ``rank``) or ``all`` of them, cosine in the learned space.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from crossfeed.train.exceptions import DatasetFormatError, DatasetNotFoundError
from crossfeed.train.metrics import DEFAULT_KS, RetrievalScores, retrieval_scores

log = logging.getLogger(__name__)

DATASET = "wikipedia"
ENV_VAR = "CROSSFEED_WIKIPEDIA_DIR"
N_TRAIN, N_TEST, N_CLASSES = 2173, 693, 10
FEATURES_FILE = "raw_features.mat"
TRAIN_LIST, TEST_LIST, CATEGORIES_FILE = (
    "trainset_txt_img_cat.list",
    "testset_txt_img_cat.list",
    "categories.list",
)
_MAX_FILE_BYTES = 64 * 1024 * 1024  # the real files are ~3 MB; refuse anything absurd
DEFAULT_METHOD = "kpm"
# Published mAP (image->text, text->image) on exactly these features, for context.
PUBLISHED: dict[str, tuple[float, float]] = {
    "CCA (Rasiwasia 2010)": (0.249, 0.196),
    "SCM (Rasiwasia 2010)": (0.277, 0.226),
    "JFSSL (TPAMI 2016)": (0.306, 0.228),
}


@dataclass(frozen=True)
class WikipediaSplit:
    """One train/test split; labels are 0-based category ids."""

    name: str
    image_train: np.ndarray  # (n_train, 128) SIFT BoW histograms
    text_train: np.ndarray  # (n_train, 10) LDA topic proportions
    labels_train: np.ndarray  # (n_train,)
    image_test: np.ndarray  # (n_test, 128)
    text_test: np.ndarray  # (n_test, 10)
    labels_test: np.ndarray  # (n_test,)
    categories: tuple[str, ...]


def _candidates(start: Path) -> list[Path]:
    """``<dir>/shared/data/wikipedia`` for ``start`` and each of its parents."""
    return [p / "shared" / "data" / DATASET for p in (start, *start.parents)]


def find_data_dir(explicit: Path | str | None = None) -> Path:
    """The data directory: ``explicit``, else ``$CROSSFEED_WIKIPEDIA_DIR``, else the first
    ``shared/data/wikipedia`` found walking up from the working directory or this package
    (the repository is checked out next to ``shared/``)."""
    chosen = explicit if explicit is not None else os.environ.get(ENV_VAR) or None
    if chosen is not None:
        path = Path(chosen).expanduser()
        if not path.is_dir():
            source = "--data" if explicit is not None else ENV_VAR
            raise DatasetNotFoundError(f"{source}: {path} is not a directory")
        return path.resolve()
    searched: list[Path] = []
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for cand in _candidates(start):
            searched.append(cand)
            if (cand / FEATURES_FILE).is_file():
                return cand.resolve()
    raise DatasetNotFoundError(
        f"Wikipedia benchmark data not found (looked for shared/data/{DATASET}/{FEATURES_FILE} "
        f"above {Path.cwd()} and the package); pass --data DIR or set {ENV_VAR}"
    )


def _file(data_dir: Path, name: str) -> Path:
    path = data_dir / name
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} is missing (not a Wikipedia benchmark directory?)")
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise DatasetFormatError(f"{path} is larger than {_MAX_FILE_BYTES} bytes; refusing")
    return path


def _read_labels(path: Path, n: int) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{path}: not UTF-8 text") from exc
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if len(rows) != n or any(len(r) != 3 for r in rows):
        raise DatasetFormatError(f"{path}: expected {n} lines of 'text_id image_id category'")
    try:
        labels = np.array([int(r[2]) for r in rows], dtype=np.int64) - 1
    except ValueError as exc:
        raise DatasetFormatError(f"{path}: non-integer category: {exc}") from exc
    if labels.min() < 0 or labels.max() >= N_CLASSES:
        raise DatasetFormatError(f"{path}: categories must be 1..{N_CLASSES}")
    return labels


def _matrix(mat: dict[str, Any], key: str, shape: tuple[int, int]) -> np.ndarray:
    arr = mat.get(key)
    if not isinstance(arr, np.ndarray) or arr.shape != shape:
        got = getattr(arr, "shape", None)
        raise DatasetFormatError(f"{FEATURES_FILE}: {key} should be {shape}, got {got}")
    if not np.issubdtype(arr.dtype, np.number):
        raise DatasetFormatError(f"{FEATURES_FILE}: {key} is not numeric ({arr.dtype})")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)) or (arr < 0).any():
        raise DatasetFormatError(f"{FEATURES_FILE}: {key} must be finite and non-negative")
    return arr


def load_wikipedia(data_dir: Path | str | None = None) -> WikipediaSplit:
    """Load and validate the standard split (see :func:`find_data_dir` for the location)."""
    import scipy.io

    root = find_data_dir(data_dir)
    try:
        mat = scipy.io.loadmat(str(_file(root, FEATURES_FILE)))
    except (ValueError, OSError, NotImplementedError) as exc:
        raise DatasetFormatError(f"cannot read {root / FEATURES_FILE}: {exc}") from exc
    return WikipediaSplit(
        name="standard",
        image_train=_matrix(mat, "I_tr", (N_TRAIN, 128)),
        text_train=_matrix(mat, "T_tr", (N_TRAIN, 10)),
        labels_train=_read_labels(_file(root, TRAIN_LIST), N_TRAIN),
        image_test=_matrix(mat, "I_te", (N_TEST, 128)),
        text_test=_matrix(mat, "T_te", (N_TEST, 10)),
        labels_test=_read_labels(_file(root, TEST_LIST), N_TEST),
        categories=_read_categories(root),
    )


def _read_categories(root: Path) -> tuple[str, ...]:
    """Category names in label order; generic names if the (optional) file is unusable."""
    fallback = tuple(f"class{i + 1}" for i in range(N_CLASSES))
    path = root / CATEGORIES_FILE
    if not path.is_file() or path.stat().st_size > 64 * 1024:
        return fallback
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    names = tuple(line.strip() for line in lines if line.strip())
    return names if len(names) == N_CLASSES else fallback


def resplit(split: WikipediaSplit, seed: int) -> WikipediaSplit:
    """Pool train and test, shuffle with ``seed``, and cut again at the standard sizes."""
    if seed < 0:
        raise DatasetFormatError(f"seed must be non-negative, got {seed}")
    image = np.vstack([split.image_train, split.image_test])
    text = np.vstack([split.text_train, split.text_test])
    labels = np.concatenate([split.labels_train, split.labels_test])
    perm = np.random.default_rng(seed).permutation(len(labels))
    n_tr = len(split.labels_train)
    tr, te = perm[:n_tr], perm[n_tr:]
    return replace(
        split,
        name=f"seed={seed}",
        image_train=image[tr],
        text_train=text[tr],
        labels_train=labels[tr],
        image_test=image[te],
        text_test=text[te],
        labels_test=labels[te],
    )


# ---------------------------------------------------------------- methods
# Each method fits on the training half only and returns (scores, chosen params),
# scores being (n_test images, n_test texts), higher = more similar.
Method = Callable[[WikipediaSplit, "MethodOptions"], tuple[np.ndarray, dict[str, Any]]]


@dataclass(frozen=True)
class MethodOptions:
    """Run-time options that are not hyper-parameters."""

    progress: bool = False
    plot_path: Path | None = None


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def _run_cca(split: WikipediaSplit, _: MethodOptions) -> tuple[np.ndarray, dict[str, Any]]:
    from crossfeed.train.cca import CCAConfig, fit_cca

    cfg = CCAConfig()
    model = fit_cca(split.image_train, split.text_train, cfg)
    scores = _cosine(model.transform_x(split.image_test), model.transform_y(split.text_test))
    return scores, {"reg": cfg.reg, "dim": int(model.proj_x.shape[1])}


def _posterior_method(kind: str) -> Method:
    def run(split: WikipediaSplit, _: MethodOptions) -> tuple[np.ndarray, dict[str, Any]]:
        from crossfeed.train.posterior import PosteriorMatchConfig, PosteriorMatcher

        cfg = PosteriorMatchConfig()
        if kind == "linear":
            cfg = replace(cfg, image_kernel="linear", text_kernel="linear")
        matcher = PosteriorMatcher(cfg).fit(split.image_train, split.text_train, split.labels_train)
        assert matcher.report is not None
        params = {
            "kernels": [cfg.image_kernel, cfg.text_kernel],
            "image": vars(matcher.report.image),
            "text": vars(matcher.report.text),
            "inner_cv_map": round(matcher.report.score, 4),
            "cv_folds": cfg.folds,
        }
        return matcher.similarity(split.image_test, split.text_test), params

    return run


HEAD_OBJECTIVES: dict[str, dict[str, float]] = {
    "infonce": {"infonce": 1.0, "supervised": 0.0, "pairwise": 0.0, "rank": 0.0},
    "supervised": {"infonce": 0.0, "supervised": 1.0, "pairwise": 0.0, "rank": 0.0},
    "pairwise": {"infonce": 0.0, "supervised": 0.0, "pairwise": 1.0, "rank": 0.0},
    "rank": {"infonce": 0.0, "supervised": 0.0, "pairwise": 0.0, "rank": 1.0},
    "all": {"infonce": 0.5, "supervised": 1.0, "pairwise": 1.0, "rank": 1.0},
}


def _heads_method(objective: str) -> Method:
    def run(split: WikipediaSplit, opts: MethodOptions) -> tuple[np.ndarray, dict[str, Any]]:
        from crossfeed.train.heads_trainer import HeadsConfig, train_heads
        from crossfeed.train.losses import ObjectiveConfig

        # Single-label benchmark: softmax cross-entropy is the matching supervised loss.
        weights = HEAD_OBJECTIVES[objective]
        base = ObjectiveConfig(
            infonce=weights["infonce"],
            supervised=weights["supervised"],
            pairwise=weights["pairwise"],
            rank=weights["rank"],
            supervised_mode="softmax",
        )
        # Hardest-negative ranking (VSE++) can stall on small, noisy data; when the
        # rank term is on, the sum variant is also trained and the validation
        # carve-out (inside the training split) picks one.
        candidates = [base]
        if base.rank > 0:
            candidates.append(replace(base, rank_hardest=False))
        fits = []
        image, text = np.sqrt(split.image_train), np.sqrt(split.text_train)  # Hellinger map
        for i, objectives in enumerate(candidates):
            plot = opts.plot_path if i == 0 else None
            fits.append(
                train_heads(
                    image,
                    text,
                    split.labels_train,
                    HeadsConfig(objectives=objectives),
                    progress=opts.progress,
                    plot_path=plot,
                )
            )
        best = max(fits, key=lambda r: r.best_score)
        scores = (
            best.embed_images(np.sqrt(split.image_test))
            @ best.embed_texts(np.sqrt(split.text_test)).T
        )
        params = {
            "objectives": HEAD_OBJECTIVES[objective],
            "rank_hardest": best.config.objectives.rank_hardest if base.rank > 0 else None,
            "best_epoch": best.best_epoch,
            "validation_map": round(best.best_score, 4),
        }
        return scores, params

    return run


METHODS: dict[str, Method] = {
    "kpm": _posterior_method("chi2"),
    "linear": _posterior_method("linear"),
    "cca": _run_cca,
    **{f"heads-{name}": _heads_method(name) for name in HEAD_OBJECTIVES},
}


@dataclass
class EvalResult:
    """Scores of one method on one split, both directions."""

    method: str
    split: str
    image_to_text: RetrievalScores
    text_to_image: RetrievalScores
    n_train: int
    n_test: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object; R@k keys are ``r{k}_image_to_text`` etc."""
        out: dict[str, Any] = {
            "dataset": DATASET,
            "method": self.method,
            "split": self.split,
            "map_image_to_text": round(self.image_to_text.map, 4),
            "map_text_to_image": round(self.text_to_image.map, 4),
        }
        for direction, res in (
            ("image_to_text", self.image_to_text),
            ("text_to_image", self.text_to_image),
        ):
            for k, v in res.recall_at.items():
                out[f"r{k}_{direction}"] = round(v, 4)
        out |= {"n_train": self.n_train, "n_test": self.n_test, "seconds": round(self.seconds, 1)}
        out["params"] = self.params
        return out


def evaluate(
    split: WikipediaSplit, method: str = DEFAULT_METHOD, options: MethodOptions | None = None
) -> EvalResult:
    """Fit ``method`` on the split's training half and score its test half."""
    if method not in METHODS:
        raise DatasetFormatError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    started = time.perf_counter()
    scores, params = METHODS[method](split, options or MethodOptions())
    y = split.labels_test
    return EvalResult(
        method=method,
        split=split.name,
        image_to_text=retrieval_scores(scores, y, y, ks=DEFAULT_KS),
        text_to_image=retrieval_scores(scores.T, y, y, ks=DEFAULT_KS),
        n_train=len(split.labels_train),
        n_test=len(y),
        seconds=time.perf_counter() - started,
        params=params,
    )


def _mean_sd(values: list[float]) -> str:
    arr = np.asarray(values, dtype=np.float64)
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return f"{arr.mean():.3f} ± {sd:.3f}"


def format_markdown(results: list[EvalResult], *, published: bool = True) -> str:
    """A markdown table, one row per result; with several re-splits of one method, a
    ``mean ± sd`` row over the re-splits (the standard split is not in that mean)."""
    head = (
        "| method | split | mAP i→t | mAP t→i | R@1 i→t | R@5 i→t | R@10 i→t "
        "| R@1 t→i | R@5 t→i | R@10 t→i |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]

    def row(method: str, split: str, cells: list[str]) -> str:
        return f"| {method} | {split} | " + " | ".join(cells) + " |"

    def cells(r: EvalResult) -> list[float]:
        i2t, t2i = r.image_to_text, r.text_to_image
        return (
            [i2t.map, t2i.map]
            + [i2t.recall_at[k] for k in DEFAULT_KS]
            + [t2i.recall_at[k] for k in DEFAULT_KS]
        )

    for r in results:
        lines.append(row(r.method, r.split, [f"{v:.3f}" for v in cells(r)]))
    for method in dict.fromkeys(r.method for r in results):
        seeded = [cells(r) for r in results if r.method == method and r.split != "standard"]
        if len(seeded) > 1:
            cols = list(zip(*seeded, strict=True))
            lines.append(
                row(
                    method, f"mean ± sd, {len(seeded)} re-splits", [_mean_sd(list(c)) for c in cols]
                )
            )
    notes = [
        "",
        "mAP over all test queries; relevant = same category. R@k = fraction of queries "
        "with at least one relevant item in the top k.",
    ]
    if published:
        refs = "; ".join(f"{name} {a:.3f} / {b:.3f}" for name, (a, b) in PUBLISHED.items())
        notes.append(f"Published on these features (mAP i→t / t→i): {refs}.")
    return "\n".join(lines + notes)
