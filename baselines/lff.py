"""LfF: Learning from Failure (Nam et al. 2020, "Learning from failure: training debiased classifier from biased
classifier")."""

import torch.nn.functional as F
from torch import Tensor

from testbed.envs.base import Batch
from testbed.errors import ConfigError
from testbed.training.backbones import build_backbone
from testbed.training.module import Baseline


class LfF(Baseline):
    """Two models of the same backbone trained together. The biased one minimises the generalized cross-entropy
    (GCE, Zhang and Sabuncu 2018), which weights each sample's gradient by p_y^q and so learns the easy, spurious
    rule first and keeps it. The debiased one (the model that is scored) minimises cross-entropy weighted by each
    sample's relative difficulty CE_b / (CE_b + CE_d): the samples the biased model fails on count most.

    Relative difficulty is taken per batch, without Nam et al.'s per-sample moving average of the losses. The
    recorded parameter count is the debiased model's; the biased one doubles the training cost.

    Args:
        q: GCE exponent (Nam et al. use 0.7).
    """

    def __init__(self, q: float = 0.7, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 < q <= 1:
            raise ConfigError(f"q: {q} is outside the allowed range (0, 1]")
        h = self.hparams
        self.biased = build_backbone(h.arch, h.input_shape, h.n_classes, h.width, h.depth, h.weights)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits_b = self.biased(batch.x)
        ce_b = F.cross_entropy(logits_b, batch.y, reduction="none")
        p_y = ce_b.detach().neg().exp()
        gce = ce_b * p_y ** self.hparams.q * self.hparams.q  # the gradient of (1 - p_y^q) / q, as in Nam et al.'s code
        ce_d = self.cross_entropy(self(batch.x), batch.y)
        weight = ce_b.detach() / (ce_b.detach() + ce_d.detach() + 1e-8)
        return (weight * ce_d).mean() + gce.mean()
