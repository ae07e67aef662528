"""VREx: variance risk extrapolation (Krueger et al. 2021)."""

from torch import Tensor

from testbed.baselines.risks import AnnealedPenalty, group_risks
from testbed.envs.base import Batch
from testbed.training.module import Baseline


class VREx(AnnealedPenalty, Baseline):
    """Mean risk over the training environments plus the variance of those risks: a model whose risk is the
    same in every training environment cannot lean on a feature whose reliability differs between them.

    The penalty weight is annealed as for IRM (`AnnealedPenalty`: Krueger et al. reuse Arjovsky et al.'s Colored
    MNIST protocol; DomainBed samples the weight from 1e-1 to 1e5), the L2 term inside the divided loss.

    Args:
        penalty_weight: weight of the variance after annealing.
        anneal_steps: optimiser steps trained with weight 1.
    """

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        _, risks = group_risks(self.cross_entropy(self(batch.x), batch.y), batch.e)
        return self.penalised(risks, risks.var(unbiased=False))
