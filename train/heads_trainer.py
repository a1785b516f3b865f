"""Train projection heads over fixed features with the cross-modal objectives.

Input: paired image and text feature matrices (one row per post) and, for the
supervised and pairwise objectives, labels (class ids ``(n,)`` or a 0/1 tag
matrix ``(n, L)``). A validation carve-out is taken *from the training data*
(by row, seeded); each epoch is scored on it and training stops early when the
validation mAP (label relevance, cosine ranking) has not improved for
``patience`` epochs, keeping the best epoch's weights. Without labels the
validation score is minus the validation loss.

The heads are :class:`crossfeed.encoders.heads.ProjectionHead` instances with
the input standardisation folded into their first layer, so they consume raw
features and can be stored with :func:`crossfeed.encoders.heads.save_heads`
(keys ``"image"`` and ``"text"``) unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossfeed.encoders.exceptions import TrainingError
from crossfeed.encoders.heads import HeadSpec, ProjectionHead
from crossfeed.train.losses import ObjectiveConfig, combined_loss
from crossfeed.train.metrics import mean_average_precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadsConfig:
    """Shape and optimisation of the heads.

    Defaults, sized for a few thousand rows of low-dimensional features (the
    Wikipedia benchmark; the clipart corpus is similar): one hidden layer of
    256 (an MLP, because a linear map cannot undo the non-linear class
    structure of BoW histograms) into a 64-d shared space (well above the label
    count, so classes need not collide); input dropout 0.2 and weight decay
    1e-4 against over-fitting ~2k rows; Adam at 1e-3 with batch 128 (batches
    must hold several items per label for the pairwise and rank terms); up to
    100 epochs, stopped after 15 without validation gain; 15 % of the rows
    held out for that check.
    """

    dim: int = 64
    hidden: int = 256
    head_kind: Literal["mlp", "linear"] = "mlp"
    dropout: float = 0.2
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.15
    patience: int = 15
    seed: int = 0
    objectives: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self) -> None:
        if self.dim < 1 or self.hidden < 1 or self.epochs < 1 or self.batch_size < 2:
            raise TrainingError("dim, hidden, epochs must be >= 1 and batch_size >= 2")
        if not 0.0 <= self.dropout < 1.0:
            raise TrainingError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.val_fraction < 0.9:
            raise TrainingError(f"val_fraction must be in [0, 0.9), got {self.val_fraction}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise TrainingError("lr must be positive and weight_decay non-negative")


class _Model(nn.Module):
    """Two heads on standardised inputs plus one label classifier shared by both."""

    def __init__(self, d_img: int, d_txt: int, n_labels: int, cfg: HeadsConfig) -> None:
        super().__init__()
        hidden = cfg.hidden if cfg.head_kind == "mlp" else None
        self.image = ProjectionHead(HeadSpec(cfg.head_kind, d_img, cfg.dim, hidden))
        self.text = ProjectionHead(HeadSpec(cfg.head_kind, d_txt, cfg.dim, hidden))
        self.drop = nn.Dropout(cfg.dropout)
        # Shared across modalities: both sides must land near the same label
        # prototypes, which is what makes the label space cross-modal.
        self.classifier = nn.Linear(cfg.dim, max(n_labels, 1))

    def forward(
        self, img: torch.Tensor, txt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        e_img = F.normalize(self.image(self.drop(img)), dim=1)  # (batch, dim)
        e_txt = F.normalize(self.text(self.drop(txt)), dim=1)  # (batch, dim)
        return e_img, e_txt, self.classifier(e_img), self.classifier(e_txt)


@dataclass
class TrainedHeads:
    """Heads ready for raw features, the shared classifier, and the training record."""

    heads: dict[str, ProjectionHead]
    classifier: nn.Linear
    history: list[dict[str, float]]
    best_epoch: int
    best_score: float
    config: HeadsConfig

    def _project(self, key: str, x: np.ndarray) -> torch.Tensor:
        head = self.heads[key].eval()
        with torch.inference_mode():
            return F.normalize(head(torch.as_tensor(np.asarray(x), dtype=torch.float32)), dim=1)

    def embed_images(self, x: np.ndarray) -> np.ndarray:
        """``(n, d_img)`` raw features -> ``(n, dim)`` unit vectors."""
        return self._project("image", x).numpy()

    def embed_texts(self, x: np.ndarray) -> np.ndarray:
        """``(n, d_txt)`` raw features -> ``(n, dim)`` unit vectors."""
        return self._project("text", x).numpy()

    def _posteriors(self, key: str, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = self.classifier.eval()(self._project(key, x))
            multi = self.config.objectives.supervised_mode == "bce"
            return (torch.sigmoid(logits) if multi else torch.softmax(logits, dim=1)).numpy()

    def image_posteriors(self, x: np.ndarray) -> np.ndarray:
        """``(n, d_img)`` -> ``(n, L)`` label probabilities (sigmoid for bce, softmax otherwise)."""
        return self._posteriors("image", x)

    def text_posteriors(self, x: np.ndarray) -> np.ndarray:
        """``(n, d_txt)`` -> ``(n, L)`` label probabilities."""
        return self._posteriors("text", x)


def _label_matrix(labels: np.ndarray | None, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    y = np.asarray(labels)
    if len(y) != n:
        raise TrainingError(f"{len(y)} labels for {n} rows")
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
            raise TrainingError("class labels must be non-negative integers")
        return np.eye(int(y.max()) + 1, dtype=np.float32)[y]
    if y.ndim == 2 and np.all(np.isfinite(y)) and (y >= 0).all():
        return y.astype(np.float32)
    raise TrainingError(
        f"labels must be (n,) class ids or an (n, L) non-negative matrix: {y.shape}"
    )


def _fold_standardisation(head: ProjectionHead, mean: np.ndarray, std: np.ndarray) -> None:
    """Rewrite the first linear layer so the head takes raw instead of standardised input."""
    first = head.net if isinstance(head.net, nn.Linear) else head.net[0]  # type: ignore[index]
    assert isinstance(first, nn.Linear)
    with torch.no_grad():
        w = first.weight / torch.as_tensor(std, dtype=torch.float32)[None, :]
        first.bias.sub_(w @ torch.as_tensor(mean, dtype=torch.float32))
        first.weight.copy_(w)


def _val_score(model: _Model, vi: torch.Tensor, vt: torch.Tensor, vy: np.ndarray | None) -> float:
    with torch.inference_mode():
        e_img, e_txt, _, _ = model(vi, vt)
    sim = (e_img @ e_txt.T).numpy()
    rel_labels = np.arange(len(sim)) if vy is None else vy  # no labels: the pair itself
    if vy is not None and vy.ndim == 2 and vy.shape[1] and (vy.sum(1) == 1).all():
        rel_labels = vy.argmax(1)
    return 0.5 * (
        mean_average_precision(sim, rel_labels, rel_labels)
        + mean_average_precision(sim.T, rel_labels, rel_labels)
    )


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads (restored afterwards)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_heads(
    image: np.ndarray,
    text: np.ndarray,
    labels: np.ndarray | None = None,
    config: HeadsConfig | None = None,
    *,
    progress: bool = True,
    plot_path: Path | None = None,
    num_threads: int | None = 1,
) -> TrainedHeads:
    """Fit image and text heads on paired rows; see the module docstring.

    ``num_threads`` = 1 by default: these heads are tiny, and torch's
    intra-op threads only add synchronisation, which on a busy shared CPU made
    an epoch 5x slower than single-threaded. ``None`` leaves torch's setting.
    """
    with _torch_threads(num_threads):
        return _train(image, text, labels, config, progress=progress, plot_path=plot_path)


def _train(
    image: np.ndarray,
    text: np.ndarray,
    labels: np.ndarray | None,
    config: HeadsConfig | None,
    *,
    progress: bool,
    plot_path: Path | None,
) -> TrainedHeads:
    cfg = config or HeadsConfig()
    x_img = np.asarray(image, dtype=np.float32)
    x_txt = np.asarray(text, dtype=np.float32)
    if x_img.ndim != 2 or x_txt.ndim != 2 or len(x_img) != len(x_txt):
        raise TrainingError(f"need paired (n, d) features, got {x_img.shape} and {x_txt.shape}")
    if not (np.all(np.isfinite(x_img)) and np.all(np.isfinite(x_txt))):
        raise TrainingError("features contain NaN or infinity")
    y = _label_matrix(labels, len(x_img))
    if cfg.objectives.needs_labels and y is None:
        raise TrainingError("the supervised and pairwise objectives need labels")
    n = len(x_img)
    n_val = round(cfg.val_fraction * n)
    if n - n_val < cfg.batch_size // 2 or (cfg.val_fraction > 0 and n_val < 2):
        raise TrainingError(f"{n} rows are too few for batch {cfg.batch_size} and a validation set")

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(n)
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    mean_i, std_i = x_img[tr_idx].mean(0), x_img[tr_idx].std(0) + 1e-6
    mean_t, std_t = x_txt[tr_idx].mean(0), x_txt[tr_idx].std(0) + 1e-6
    ti = torch.from_numpy((x_img - mean_i) / std_i)
    tt = torch.from_numpy((x_txt - mean_t) / std_t)
    ty = torch.from_numpy(y) if y is not None else None

    model = _Model(x_img.shape[1], x_txt.shape[1], 0 if y is None else y.shape[1], cfg)

    def batch_loss(b: torch.Tensor) -> torch.Tensor:
        e_img, e_txt, l_img, l_txt = model(ti[b], tt[b])
        loss, _ = combined_loss(
            e_img, e_txt, l_img, l_txt, None if ty is None else ty[b], cfg.objectives
        )
        return loss

    def validate(vb: torch.Tensor) -> dict[str, float]:
        with torch.inference_mode():
            val_loss = batch_loss(vb)
        vy = None if y is None else y[val_idx]
        return {"val_loss": float(val_loss), "val_map": _val_score(model, ti[vb], tt[vb], vy)}

    history, best_epoch, best_score = fit_early_stopping(
        model,
        batch_loss,
        validate,
        tr_idx=tr_idx,
        val_idx=val_idx,
        rng=rng,
        cfg=cfg,
        desc="heads",
        progress=progress,
    )
    _fold_standardisation(model.image, mean_i, std_i)
    _fold_standardisation(model.text, mean_t, std_t)
    log.info("heads: best epoch %d of %d, validation %.4f", best_epoch, len(history), best_score)
    result = TrainedHeads(
        heads={"image": model.image, "text": model.text},
        classifier=model.classifier,
        history=history,
        best_epoch=best_epoch,
        best_score=best_score,
        config=cfg,
    )
    if plot_path is not None:
        plot_history(history, plot_path, title=f"heads ({_objective_names(cfg)})")
    return result


class _LoopConfig(Protocol):
    """What the loop reads from a trainer config (frozen dataclasses satisfy it)."""

    @property
    def epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def patience(self) -> int: ...


def fit_early_stopping(
    model: nn.Module,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    validate: Callable[[torch.Tensor], dict[str, float]],
    *,
    tr_idx: np.ndarray,
    val_idx: np.ndarray,
    rng: np.random.Generator,
    cfg: _LoopConfig,
    desc: str,
    progress: bool,
) -> tuple[list[dict[str, float]], int, float]:
    """AdamW over shuffled mini-batches of ``tr_idx``, early-stopped on ``validate``.

    ``batch_loss(idx)`` is the loss of the rows ``idx``; ``validate(val_idx)``
    returns at least ``val_map`` (the score to maximise). Without a validation
    carve-out the score is minus the training loss. The best epoch's weights are
    loaded back; returns ``(history, best_epoch, best_score)``.
    """
    from tqdm.auto import tqdm  # local: only training needs the progress bar

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] = (-math.inf, 0, _state(model))
    bad_epochs = 0
    bar = tqdm(range(1, cfg.epochs + 1), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = torch.from_numpy(rng.permutation(tr_idx))
        total, steps = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            b = order[start : start + cfg.batch_size]
            if len(b) < 2:
                continue
            loss = batch_loss(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        record: dict[str, float] = {"epoch": epoch, "train_loss": total / max(steps, 1)}
        if len(val_idx):
            model.eval()
            record.update(validate(torch.from_numpy(val_idx)))
            score = record["val_map"]
        else:
            score = -record["train_loss"]
        history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", val=f"{score:.4f}")
        if score > best[0]:
            best, bad_epochs = (score, epoch, _state(model)), 0
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                break
    bar.close()
    model.load_state_dict(best[2])
    model.eval()
    return history, best[1], float(best[0])


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _objective_names(cfg: HeadsConfig) -> str:
    weights = asdict(cfg.objectives)
    return "+".join(k for k in ("infonce", "supervised", "pairwise", "rank") if weights[k] > 0)


def plot_history(history: list[dict[str, float]], path: Path, *, title: str = "") -> Path:
    """Write a PNG of training/validation loss and validation mAP per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise TrainingError(f"plot path must end in .png, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    if history and "val_loss" in history[0]:
        ax_loss.plot(epochs, [h["val_loss"] for h in history], label="validation")
        ax_val.plot(epochs, [h["val_map"] for h in history], color="tab:green")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    ax_val.set(xlabel="epoch", ylabel="mAP (both directions)", title="validation mAP")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def history_summary(result: TrainedHeads) -> dict[str, Any]:
    """A JSON-able summary for logs and head-version metadata."""
    return {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "best_validation": result.best_score,
        "objectives": _objective_names(result.config),
    }
