"""The four objective families: hand-checked values and training steps lowering them."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from crossfeed.encoders.exceptions import TrainingError
from crossfeed.train.losses import (
    BidirectionalRankingLoss,
    CrossModalObjective,
    ObjectiveConfig,
    bidirectional_ranking_loss,
    info_nce_loss,
    pairwise_margin_loss,
    supervised_tag_loss,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: single-threaded torch is faster and steadier on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_ranking_loss_eq2_by_hand() -> None:
    # S = [[0.9, 0.8], [0.1, 0.5]], margin 0.2.
    # image 0: max(0, 0.8 - 0.9 + 0.2) = 0.1; image 1: max(0, 0.1 - 0.5 + 0.2) = 0
    # text 0:  max(0, S10 - S00 + 0.2) = 0;   text 1: max(0, S01 - S11 + 0.2) = 0.5
    img = torch.eye(2)
    txt = torch.tensor([[0.9, 0.1], [0.8, 0.5]])  # S = img @ txt.T = txt.T
    s_loss = bidirectional_ranking_loss(img, txt, margin=0.2, hardest=False)
    assert float(s_loss) == pytest.approx((0.1 + 0.0) / 2 + (0.0 + 0.5) / 2)
    # With two items the hardest negative is the only negative.
    assert float(BidirectionalRankingLoss(0.2, hardest=True)(img, txt)) == pytest.approx(0.3)
    # Items sharing a label are not negatives: nothing is left to violate.
    same = torch.ones(2, 1)
    assert float(bidirectional_ranking_loss(img, txt, labels=same)) == 0.0


def test_hardest_differs_from_sum_with_more_negatives() -> None:
    img = torch.eye(3)
    txt = torch.tensor([[0.5, 0.45, 0.4], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]]).T.contiguous()
    hard = bidirectional_ranking_loss(img, txt, margin=0.2, hardest=True)
    total = bidirectional_ranking_loss(img, txt, margin=0.2, hardest=False)
    assert float(total) > float(hard) > 0.0


def test_info_nce_is_small_for_aligned_and_log_b_for_uninformative() -> None:
    e = torch.eye(4)
    assert float(info_nce_loss(e, e, 0.05)) < 1e-6
    same = F.normalize(torch.ones(4, 4), dim=1)
    assert float(info_nce_loss(same, same, 0.1)) == pytest.approx(math.log(4), rel=1e-5)


def test_supervised_loss_smoothing_and_forward_correction() -> None:
    logits = torch.tensor([[2.0, -1.0]])
    target = torch.tensor([[1.0, 0.0]])
    smoothed = torch.tensor([[0.95, 0.05]])  # eps 0.1 towards 0.5
    expected = F.binary_cross_entropy_with_logits(logits, smoothed)
    assert float(supervised_tag_loss(logits, target, smoothing=0.1)) == pytest.approx(
        float(expected)
    )
    # Forward correction with zero rates is plain BCE.
    plain = supervised_tag_loss(logits, target)
    assert float(plain) == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, target)))
    # When users often leave tags out (missing rate 0.5), confidently predicting a
    # tag that the noisy labels lack is penalised less: the model may well be right.
    absent = torch.tensor([[0.0, 0.0]])
    loose = supervised_tag_loss(logits, absent, missing_rate=0.5)
    strict = supervised_tag_loss(logits, absent)
    assert float(loose) < float(strict)
    soft = supervised_tag_loss(logits, torch.tensor([[0.7, 0.3]]), mode="softmax")
    assert float(soft) > 0
    with pytest.raises(TrainingError):
        supervised_tag_loss(logits, target, missing_rate=0.6, spurious_rate=0.5)


def test_pairwise_margin_loss_by_hand() -> None:
    img = torch.eye(2)
    txt = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # S = [[1, 0.8], [0, 0.6]]; positives (diag): relu(0.6-1)=0, relu(0.6-0.6)=0;
    # negatives: relu(0.8-0.2)=0.6, relu(0-0.2)=0 -> mean 0.3
    loss = pairwise_margin_loss(img, txt, labels, pos_margin=0.6, neg_margin=0.2)
    assert float(loss) == pytest.approx(0.3)


@pytest.mark.parametrize(
    "weights",
    [
        {"infonce": 1.0, "supervised": 0.0, "pairwise": 0.0, "rank": 0.0},
        {"infonce": 0.0, "supervised": 1.0, "pairwise": 0.0, "rank": 0.0},
        {"infonce": 0.0, "supervised": 0.0, "pairwise": 1.0, "rank": 0.0},
        {"infonce": 0.0, "supervised": 0.0, "pairwise": 0.0, "rank": 1.0},
        {"infonce": 0.5, "supervised": 1.0, "pairwise": 1.0, "rank": 1.0},
    ],
    ids=["infonce", "supervised", "pairwise", "rank", "all"],
)
def test_training_steps_lower_each_objective(weights: dict[str, float]) -> None:
    torch.manual_seed(0)
    n, n_cls = 48, 4
    y = torch.arange(n) % n_cls
    labels = F.one_hot(y, n_cls).float()
    centers = torch.randn(n_cls, 12)
    x_img = centers[y] + 0.3 * torch.randn(n, 12)
    x_txt = centers[y] @ torch.randn(12, 6) + 0.3 * torch.randn(n, 6)
    f_img, f_txt = torch.nn.Linear(12, 8), torch.nn.Linear(6, 8)
    classifier = torch.nn.Linear(8, n_cls)
    objective = CrossModalObjective(ObjectiveConfig(**weights))
    params = [*f_img.parameters(), *f_txt.parameters(), *classifier.parameters()]
    opt = torch.optim.Adam(params, lr=0.05)

    def loss() -> torch.Tensor:
        e_img, e_txt = F.normalize(f_img(x_img), dim=1), F.normalize(f_txt(x_txt), dim=1)
        total, parts = objective(e_img, e_txt, classifier(e_img), classifier(e_txt), labels)
        assert set(parts) == {k for k, w in weights.items() if w > 0}
        return total

    first = float(loss().detach())
    for _ in range(30):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert float(loss().detach()) < 0.8 * first


def test_objective_config_validation() -> None:
    with pytest.raises(TrainingError):
        ObjectiveConfig(infonce=0, supervised=0, pairwise=0, rank=0)
    with pytest.raises(TrainingError):
        ObjectiveConfig(rank=-1.0)
    e = F.normalize(torch.randn(4, 3), dim=1)
    with pytest.raises(TrainingError):
        CrossModalObjective(ObjectiveConfig())(e, e)  # supervised needs labels
