"""Risk per environment or per group: the quantity IRM, VREx and GroupDRO constrain instead of the mean."""

import torch
from torch import Tensor


def group_risks(losses: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Mean loss of each group present in the batch, as `(ids, risks)`; `index` gives each sample's group."""
    ids, inverse = index.unique(return_inverse=True)
    sums = torch.zeros(len(ids), dtype=losses.dtype, device=losses.device).index_add(0, inverse, losses)
    return ids, sums / torch.bincount(inverse, minlength=len(ids))
