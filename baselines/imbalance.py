"""Losses for class imbalance that SubpopBench compares against (Yang et al. 2023, "Change is hard: a closer look at
subpopulation shift"): Focal, LDAM and BSoftmax. Each changes the per-sample loss, not the data; LDAM and BSoftmax
read the training data's class counts when fitting starts. (CBLoss, a loss weight, is in `balance.py`.)"""

import torch
import torch.nn.functional as F
from torch import Tensor

from testbed.baselines.balance import key_counts
from testbed.envs.base import Batch
from testbed.errors import ConfigError, check_positive
from testbed.hparams import Range
from testbed.training.module import Baseline


class Focal(Baseline):
    """Focal loss (Lin et al. 2017, "Focal loss for dense object detection"): each sample's cross-entropy scaled by
    (1 - p_y)^gamma, so that well-classified samples (mostly the majority's) count less and hard ones more. The
    factor is differentiated through, as in Lin et al. and SubpopBench. Needs no group labels. Measured on
    GaussianGroups (tests/test_subpop_methods.py, seeds 0-2): with class 1 a hundredth of training it raises that
    class's accuracy over ERM's by 0.11 to 0.18; with a tenth and a noisy core (ceiling 0.84), by -0.04 to 0.03.

    Args:
        gamma: focusing exponent, >= 0 (0 is ERM; SubpopBench's default 1, Lin et al.'s 2).
    """

    tunable = {**Baseline.tunable, "gamma": Range(0.5, 5.0, log=True)}  # SubpopBench: 0.5 * 10^U(0, 1)

    def __init__(self, gamma: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if gamma < 0:
            raise ConfigError(f"gamma: {gamma} is not allowed; it must be >= 0")

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        ce = self.cross_entropy(self(batch.x), batch.y)
        return ((1 - torch.exp(-ce)) ** self.hparams.gamma * ce).mean()


class LDAM(Baseline):
    """Label-distribution-aware margin loss (Cao et al. 2019, "Learning imbalanced datasets with label-distribution-
    aware margin loss"): cross-entropy of `scale` x the logits, the true class's logit first lowered by a margin
    m_y proportional to n_y^-1/4, the largest (the rarest class's) `max_m`. Rare classes must then be won by a wider
    margin. As in SubpopBench, on the backbone's own linear head, without Cao et al.'s normalised head or their
    deferred re-weighting (DRW). Needs no group labels. Measured on GaussianGroups (tests/test_subpop_methods.py,
    seeds 0-2): with class 1 a hundredth of training it raises that class's accuracy over ERM's by 0.40 to 0.49;
    with a tenth and a noisy core (ceiling 0.84), by -0.05 to 0.05: with overlapping classes both scaled margins
    (15 and 8.7 at `scale` 30) saturate the loss alike and leave ERM's decision rule.

    Args:
        max_m: the rarest class's margin (Cao et al. and SubpopBench: 0.5).
        scale: the logits' scale s (SubpopBench: 30).
    """

    margins: Tensor  # per class, set when fitting starts

    # SubpopBench: max_m = 10^U(-1, -0.1), scale from {10, 30}.
    tunable = {**Baseline.tunable, "max_m": Range(0.1, 10 ** -0.1, log=True), "scale": [10.0, 30.0]}

    def __init__(self, max_m: float = 0.5, scale: float = 30.0, **kwargs) -> None:
        super().__init__(**kwargs)
        check_positive("max_m", max_m)
        check_positive("scale", scale)

    def on_fit_start(self) -> None:
        counts = key_counts("class", self.env)
        m = torch.where(counts > 0, counts.clamp_min(1) ** -0.25, 0.0)  # a class absent from training: no margin
        self.margins = (m * self.hparams.max_m / m.max()).float().to(self.device)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits = self(batch.x)
        self.cross_entropy(logits, batch.y)  # the plain cross-entropy, for the training log
        shifted = logits - F.one_hot(batch.y, logits.shape[1]) * self.margins[batch.y, None]
        return F.cross_entropy(self.hparams.scale * shifted, batch.y)


class BSoftmax(Baseline):
    """Balanced softmax (Ren et al. 2020, "Balanced meta-softmax for long-tailed visual recognition"): in training,
    the cross-entropy of the logits plus log n_y, each class's log count in the training data; at test, the plain
    logits. The training softmax then models the imbalanced training distribution, so the logits themselves model
    the class-balanced one (the logit adjustment of Menon et al. 2021). Needs no group labels."""

    log_counts: Tensor  # per class, set when fitting starts

    def on_fit_start(self) -> None:
        # A class absent from training counts as one sample: its logit is left as is, not sent to -inf.
        self.log_counts = key_counts("class", self.env).clamp_min(1).log().float().to(self.device)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits = self(batch.x)
        self.cross_entropy(logits, batch.y)  # the plain cross-entropy, for the training log
        return F.cross_entropy(logits + self.log_counts, batch.y)
