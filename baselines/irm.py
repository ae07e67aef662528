"""IRM: invariant risk minimisation in its penalty form (IRMv1, Arjovsky et al. 2019)."""

import torch
from torch import Tensor

from testbed.baselines.risks import annealed, group_risks
from testbed.envs.base import Batch
from testbed.errors import check_positive
from testbed.hparams import Range
from testbed.training.module import Baseline


class IRM(Baseline):
    """Mean risk over the training environments plus, per environment, the squared gradient of its risk with
    respect to a dummy classifier scale w = 1: zero only when one classifier is optimal in every environment.

    As in Arjovsky et al.'s Colored MNIST code, the penalty weight is 1 for `anneal_steps` steps, so that
    features form first, then `penalty_weight`, with the loss divided by it to keep the gradient scale.

    Args:
        penalty_weight: weight of the penalty after annealing (Arjovsky et al. use 91257 with 190 annealing
            steps; DomainBed samples 1e-1 to 1e5).
        anneal_steps: optimiser steps trained with weight 1.
    """

    # DomainBed's ranges: lambda 10^U(-1, 5), annealing 10^U(0, 4) steps.
    tunable = {**Baseline.tunable, "penalty_weight": Range(1e-1, 1e5, log=True),
               "anneal_steps": Range(1, 10000, log=True)}

    def __init__(self, penalty_weight: float = 1e4, anneal_steps: int = 100, **kwargs) -> None:
        super().__init__(**kwargs)
        check_positive("penalty_weight", penalty_weight)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        scale = torch.ones((), device=self.device, requires_grad=True)
        _, risks = group_risks(self.cross_entropy(self(batch.x) * scale, batch.y), batch.e)
        grads = [torch.autograd.grad(r, scale, create_graph=True)[0] for r in risks]
        penalty = torch.stack(grads).pow(2).mean()
        self.log("train/penalty", penalty, on_step=False, on_epoch=True)
        return annealed(risks, penalty, self.hparams.penalty_weight, self.global_step, self.hparams.anneal_steps)
