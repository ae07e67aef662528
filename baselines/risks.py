"""Risk per environment or per group: the quantity IRM, VREx and GroupDRO constrain instead of the mean."""

import torch
from torch import Tensor


def group_risks(losses: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Mean loss of each group present in the batch, as `(ids, risks)`; `index` gives each sample's group."""
    ids, inverse = index.unique(return_inverse=True)
    sums = torch.zeros(len(ids), dtype=losses.dtype, device=losses.device).index_add(0, inverse, losses)
    return ids, sums / torch.bincount(inverse, minlength=len(ids))


def annealed(risks: Tensor, penalty: Tensor, weight: float, step: int, anneal_steps: int) -> Tensor:
    """Mean risk plus the penalty, weighted 1 for the first `anneal_steps` optimiser steps (so that features form
    first) and `weight` after, with the loss divided by the weight to keep the gradient scale: the protocol of
    Arjovsky et al.'s Colored MNIST code, which Krueger et al. reuse for VREx."""
    weight = weight if step >= anneal_steps else 1.0
    return (risks.mean() + weight * penalty) / max(weight, 1.0)
