"""LISA: selective augmentation (Yao et al. 2022, "Improving out-of-distribution robustness via selective
augmentation"; SubpopBench's `LISA`)."""

import torch
import torch.nn.functional as F
from torch import Tensor

from testbed.baselines.balance import require_groups
from testbed.envs.base import Batch, ShiftedEnv
from testbed.errors import ConfigError, check_positive
from testbed.hparams import Range
from testbed.training.module import Baseline
from testbed.training.probe import body_and_head


def partners(first: Tensor, second: Tensor) -> Tensor:
    """For each sample, a random other sample of the batch with the same `first` and a different `second` (itself
    if there is none)."""
    allowed = (first[:, None] == first[None]) & (second[:, None] != second[None])
    draw = torch.rand(allowed.shape, device=first.device).masked_fill_(~allowed, -1.0)
    best = draw.argmax(1)
    return torch.where(allowed.any(1), best, torch.arange(len(first), device=first.device))


class LISA(Baseline):
    """Mixup between selected pairs. With probability `p_sel` a batch is mixed intra-label: each sample with one of
    the same label and another spurious attribute, which averages the attribute out while the label stays.
    Otherwise intra-attribute: with one of the same attribute and another label, which makes the attribute
    useless for telling the labels apart. Inputs are mixed as x = lam x_i + (1 - lam) x_j, lam ~ Beta(alpha,
    alpha) per pair, against lam CE(y_i) + (1 - lam) CE(y_j); token inputs (text) are mixed as penultimate
    features, as SubpopBench does. A sample with no partner in the batch is left unmixed. Every sample of the batch
    is mixed (SubpopBench instead draws min-size pairs of groups until a batch is full; both pair every mixed
    sample across the two groups); SubpopBench's CutMix option for images is not offered. Needs group labels.

    Args:
        alpha: Beta parameter of the mixing weight (Yao et al. and SubpopBench: 2).
        p_sel: probability of intra-label mixing for a batch (SubpopBench: 0.5).
    """

    # SubpopBench: alpha = 10^U(-1, 1), p_sel = U(0, 1).
    tunable = {**Baseline.tunable, "alpha": Range(0.1, 10.0, log=True), "p_sel": Range(0.0, 1.0)}

    def __init__(self, alpha: float = 2.0, p_sel: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        check_positive("alpha", alpha)
        if not 0 <= p_sel <= 1:
            raise ConfigError(f"p_sel: {p_sel} is outside the allowed range [0, 1]")

    def check_env(self, env: ShiftedEnv) -> None:
        require_groups(env, "LISA")

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        h = self.hparams
        intra_label = float(torch.rand(())) < h.p_sel
        j = partners(batch.y, batch.a) if intra_label else partners(batch.a, batch.y)
        lam = torch.distributions.Beta(h.alpha, h.alpha).sample((len(j),)).to(self.device)
        if h.vocab_size is None:
            mix = lam.view(-1, *[1] * (batch.x.dim() - 1))
            logits = self(mix * batch.x + (1 - mix) * batch.x[j])
        else:
            body, head = body_and_head(self.net)
            f = body(batch.x)
            logits = head(lam[:, None] * f + (1 - lam[:, None]) * f[j])
        y_j = batch.y[j]
        loss = lam * F.cross_entropy(logits, batch.y, reduction="none") + (1 - lam) * F.cross_entropy(
            logits, y_j, reduction="none")
        self.tally_train(loss.mean(), logits, torch.where(lam >= 0.5, batch.y, y_j))  # against the larger share
        return loss.mean()
