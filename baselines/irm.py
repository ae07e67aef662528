"""IRM: invariant risk minimisation in its penalty form (IRMv1, Arjovsky et al. 2019)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from testbed.baselines.risks import AnnealedPenalty, group_risks
from testbed.envs.base import Batch
from testbed.training.module import Baseline


def halves(e: Tensor) -> Tensor:
    """Each sample's half of its environment, 2 e + (its rank among the batch's samples of e) mod 2: the
    alternating split of DomainBed's IRM (`logits[::2]`, `logits[1::2]`), per environment."""
    ids, inverse = e.unique(return_inverse=True)
    rank = F.one_hot(inverse, len(ids)).cumsum(0).gather(1, inverse[:, None]).squeeze(1) - 1
    return 2 * e + rank % 2


def irm_penalty(logits: Tensor, y: Tensor, e: Tensor, unbiased: bool = False,
                loss: Callable[[Tensor, Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """`(per-environment risks, IRMv1 penalty)`. The penalty is the mean over environments of the squared
    gradient of the environment's risk with respect to a classifier scale w at 1 (Arjovsky et al.), or with
    `unbiased` the product of the gradients of its two halves (DomainBed's `_irm_penalty`), whose expectation
    is the squared gradient of the expected risk: the plain square adds the variance of the batch's estimate.
    Environments with one sample in the batch have no second half and are left out of the unbiased form.
    `loss` maps logits and labels to per-sample losses (cross-entropy by default)."""
    loss = loss or (lambda z, t: F.cross_entropy(z, t, reduction="none"))
    parts = halves(e) if unbiased else e
    ids, inverse = parts.unique(return_inverse=True)
    scale = torch.ones(len(ids), dtype=logits.dtype, device=logits.device, requires_grad=True)
    losses = loss(logits * scale[inverse, None], y)
    _, risks = group_risks(losses, e)
    # Each part's risk depends on its own scale alone, so one gradient of their sum gives every part's.
    grads = torch.autograd.grad(group_risks(losses, parts)[1].sum(), scale, create_graph=True)[0]
    if not unbiased:
        return risks, grads.pow(2).mean()
    second = (ids % 2 == 1).nonzero().flatten()  # ids are sorted, so each second half follows its first
    return risks, (grads[second] * grads[second - 1]).mean() if len(second) else grads.sum() * 0


class IRM(AnnealedPenalty, Baseline):
    """Mean risk over the training environments plus, per environment, the squared gradient of its risk with
    respect to a dummy classifier scale w = 1: zero only when one classifier is optimal in every environment.
    Annealed as `AnnealedPenalty` says (the L2 term inside the divided loss, Adam's reset an option).

    Args:
        penalty_weight: weight of the penalty after annealing (Arjovsky et al. use 91257 with 190 annealing
            steps; DomainBed samples 1e-1 to 1e5).
        anneal_steps: optimiser steps trained with weight 1.
        unbiased: DomainBed's split-half penalty, the product of the gradients of each environment's two
            halves, instead of Arjovsky et al.'s square of the whole environment's gradient.
    """

    def __init__(self, penalty_weight: float = 1e4, anneal_steps: int = 100, unbiased: bool = False,
                 **kwargs) -> None:
        super().__init__(penalty_weight=penalty_weight, anneal_steps=anneal_steps, **kwargs)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        risks, penalty = irm_penalty(self(batch.x), batch.y, batch.e, self.hparams.unbiased, self.cross_entropy)
        return self.penalised(risks, penalty)
