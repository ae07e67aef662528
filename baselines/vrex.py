"""VREx: variance risk extrapolation (Krueger et al. 2021)."""

from torch import Tensor

from testbed.baselines.risks import annealed, group_risks
from testbed.envs.base import Batch
from testbed.errors import check_positive
from testbed.hparams import Range
from testbed.training.module import Baseline


class VREx(Baseline):
    """Mean risk over the training environments plus the variance of those risks: a model whose risk is the
    same in every training environment cannot lean on a feature whose reliability differs between them.

    The penalty weight is annealed as for IRM (Krueger et al. reuse Arjovsky et al.'s Colored MNIST protocol;
    DomainBed samples the weight from 1e-1 to 1e5), with the loss divided by it after annealing.

    Args:
        penalty_weight: weight of the variance after annealing.
        anneal_steps: optimiser steps trained with weight 1.
    """

    # DomainBed's ranges: lambda 10^U(-1, 5), annealing 10^U(0, 4) steps.
    tunable = {**Baseline.tunable, "penalty_weight": Range(1e-1, 1e5, log=True),
               "anneal_steps": Range(1, 10000, log=True)}

    def __init__(self, penalty_weight: float = 1e4, anneal_steps: int = 100, **kwargs) -> None:
        super().__init__(**kwargs)
        check_positive("penalty_weight", penalty_weight)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        _, risks = group_risks(self.cross_entropy(self(batch.x), batch.y), batch.e)
        penalty = risks.var(unbiased=False)
        self.log("train/penalty", penalty, on_step=False, on_epoch=True)
        return annealed(risks, penalty, self.hparams.penalty_weight, self.global_step, self.hparams.anneal_steps)
