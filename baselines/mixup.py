"""Mixup across training environments (Zhang et al. 2018, "mixup: beyond empirical risk minimization"; the
inter-domain version of Xu et al. 2020 and Yan et al. 2020, as DomainBed implements it)."""

import torch
import torch.nn.functional as F
from torch import Tensor

from testbed.envs.base import Batch
from testbed.errors import check_positive
from testbed.hparams import Range
from testbed.training.module import Baseline


class Mixup(Baseline):
    """DomainBed's `Mixup.update` with its `random_pairs_of_minibatches`: the training environments present in the
    batch are put in a random order and each is paired with the next (cyclically; with two, A with B and B with A),
    each pair truncated to the smaller part's first rows; each pair draws its own lam ~ Beta(alpha, alpha) and
    trains on x = lam x_i + (1 - lam) x_j with the loss lam CE(y_i) + (1 - lam) CE(y_j); the step's loss is the
    mean over pairs. Where DomainBed differs: its minibatches are one per environment of equal size, while here
    the environments' parts of a pooled batch vary in size; and with one training environment DomainBed pairs it
    with itself (no mixing at all), while here it is plain mixup within the batch (Zhang et al. 2018).

    Args:
        alpha: Beta parameter of the mixing weight (DomainBed's default 0.2).
    """

    # DomainBed's and SubpopBench's range (hparams_registry.py, mixup_alpha: 10^U(-1, 1)).
    tunable = {**Baseline.tunable, "alpha": Range(0.1, 10.0, log=True)}

    def __init__(self, alpha: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        check_positive("alpha", alpha)

    def pairs(self, batch: Batch) -> list[tuple[Tensor, Tensor]]:
        """Row indices of the pairs to mix: environment i's rows with environment j's."""
        parts = [torch.nonzero(batch.e == e).flatten() for e in batch.e.unique()]
        if len(parts) == 1:
            rows = parts[0]
            return [(rows, rows[torch.randperm(len(rows), device=rows.device)])]
        order = torch.randperm(len(parts)).tolist()
        out = []
        for i, j in zip(order, order[1:] + order[:1]):
            n = min(len(parts[i]), len(parts[j]))
            out.append((parts[i][:n], parts[j][:n]))
        return out

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        beta = torch.distributions.Beta(self.hparams.alpha, self.hparams.alpha)
        losses = []
        for i, j in self.pairs(batch):
            lam = float(beta.sample())  # one per pair, as DomainBed draws it
            logits = self(lam * batch.x[i] + (1 - lam) * batch.x[j])
            loss = lam * F.cross_entropy(logits, batch.y[i]) + (1 - lam) * F.cross_entropy(logits, batch.y[j])
            self.tally_train(loss, logits, batch.y[i] if lam >= 0.5 else batch.y[j])  # against the larger share
            losses.append(loss)
        return torch.stack(losses).mean()
