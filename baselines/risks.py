"""Risk per environment or per group: the quantity IRM, VREx and GroupDRO constrain instead of the mean; and the
annealed-penalty protocol IRM and VREx share."""

import torch
from torch import Tensor

from testbed.errors import ConfigError, check_positive
from testbed.hparams import Range
from testbed.training.module import Baseline


def group_risks(losses: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Mean loss of each group present in the batch, as `(ids, risks)`; `index` gives each sample's group."""
    ids, inverse = index.unique(return_inverse=True)
    sums = torch.zeros(len(ids), dtype=losses.dtype, device=losses.device).index_add(0, inverse, losses)
    return ids, sums / torch.bincount(inverse, minlength=len(ids))


class AnnealedPenalty:
    """Mean risk over the training environments plus a penalty, on Arjovsky et al.'s Colored MNIST protocol, which
    Krueger et al. reuse for VREx: the penalty weighs 1 for the first `anneal_steps` optimiser steps, so that
    features form first, then `penalty_weight`, with the whole loss divided by that weight to keep the gradient
    scale. Mixed into a `Baseline` before it (`class IRM(AnnealedPenalty, Baseline)`), so that it is no baseline
    of its own to choose.

    The L2 term is part of that loss, (weight_decay / 2) ||theta||^2, divided with it, and Adam's own weight decay
    is 0: the L2 weight relative to the risk stays weight_decay / 2 after annealing, as in Arjovsky et al.'s code
    (their l2_regularizer_weight 0.0011 is weight_decay 0.0022 here). Adam's coupled decay, which is not divided,
    would make it penalty_weight times larger (5 instead of 5e-4 at 1e4 and 1e-3). Before annealing the term is
    the gradient wd * theta that Adam's decay adds for every other baseline.

    Args:
        penalty_weight: weight of the penalty after annealing.
        anneal_steps: optimiser steps trained with weight 1.
        reset_adam: clear Adam's moments at the first step with the full weight, as DomainBed does for IRM and
            VREx ("Adam doesn't like the sharp jump in gradient magnitudes"); Arjovsky et al.'s code does not.
    """

    l2_in_loss = True
    # DomainBed's ranges (hparams_registry.py, IRM and VREx): lambda 10^U(-1, 5), annealing 10^U(0, 4) steps.
    tunable = {**Baseline.tunable, "penalty_weight": Range(1e-1, 1e5, log=True),
               "anneal_steps": Range(1, 10000, log=True)}

    def __init__(self, penalty_weight: float = 1e4, anneal_steps: int = 100, reset_adam: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        check_positive("penalty_weight", penalty_weight)
        if anneal_steps < 0:
            raise ConfigError(f"anneal_steps: {anneal_steps} is not allowed; it must be >= 0")

    def objective(self, risks: Tensor, penalty: Tensor, step: int) -> Tensor:
        """The loss at optimiser step `step` (0-based) from the environments' risks and the penalty."""
        h = self.hparams
        weight = h.penalty_weight if step >= h.anneal_steps else 1.0
        l2 = sum(p.pow(2).sum() for p in self.net.parameters()) if h.weight_decay else 0.0
        return (risks.mean() + weight * penalty + h.weight_decay / 2 * l2) / max(weight, 1.0)

    def penalised(self, risks: Tensor, penalty: Tensor) -> Tensor:
        """The training step's loss: logs the penalty, and at the first full-weight step resets Adam if asked."""
        self.log("train/penalty", penalty, on_step=False, on_epoch=True)
        if self.hparams.reset_adam and self.global_step == self.hparams.anneal_steps:
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()  # a fresh Adam: its moments and step count start again
        return self.objective(risks, penalty, self.global_step)
