"""LfF: Learning from Failure (Nam et al. 2020, "Learning from failure: training debiased classifier from biased
classifier")."""

import torch
import torch.nn.functional as F
from torch import Tensor

from testbed.envs.base import Batch
from testbed.errors import ConfigError
from testbed.hparams import Range
from testbed.training.backbones import build_backbone
from testbed.training.module import Baseline


class LfF(Baseline):
    """Two models of the same backbone trained together. The biased one minimises the generalized cross-entropy
    (GCE, Zhang and Sabuncu 2018), which weights each sample's gradient by p_y^q and so learns the easy, spurious
    rule first and keeps it. The debiased one (the model that is scored) minimises cross-entropy weighted by each
    sample's relative difficulty W = L_b / (L_b + L_d): the samples the biased model fails on count most.

    As in Nam et al.'s code (alinlab/LfF, `train.py` and `util.EMA`): L_b and L_d are per-sample moving averages
    of each model's cross-entropy over the sample's visits (the first visit sets it; then
    L <- ema L + (1 - ema) CE), each divided by the largest average among the training samples of the sample's
    class. The averages live per process: under DDP each rank keeps those of its own shard. LfF needs no
    environments, so the training data it is served carries each sample's row in `e`.

    The recorded parameter count is the debiased model's; the FLOPs per training sample count both models, as
    both train on every sample.

    Args:
        q: GCE exponent (Nam et al. use 0.7; SubpopBench samples U(0.05, 0.95)).
        ema: weight of the past in the moving averages of the losses (Nam et al.'s alpha, 0.7).
    """

    # SubpopBench's range (hparams_registry.py, LfF_q: U(0.05, 0.95)).
    tunable = {**Baseline.tunable, "q": Range(0.05, 0.95)}

    def __init__(self, q: float = 0.7, ema: float = 0.7, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 < q <= 1:
            raise ConfigError(f"q: {q} is outside the allowed range (0, 1]")
        if not 0 <= ema < 1:
            raise ConfigError(f"ema: {ema} is outside the allowed range [0, 1)")
        h = self.hparams
        self.biased = build_backbone(h.arch, h.input_shape, h.n_classes, h.width, h.depth, h.weights)
        self.flops_per_sample *= 2  # the biased model is the same backbone, trained on the same samples
        self.losses: Tensor | None = None  # [2, n]: each training sample's averaged loss, biased then debiased
        self.visited: Tensor | None = None  # [n]: whether the sample has been trained on yet
        self.labels: Tensor | None = None  # [n]: the training labels, whose classes the averages are normalised in

    def on_fit_start(self) -> None:
        data = self.env.train_data
        self.env.served = data._replace(e=torch.arange(len(data.y), device=data.e.device))
        self.start_averages(data.y)

    def start_averages(self, labels: Tensor) -> None:
        """Empty moving averages for training samples with these labels (row i of the served data is sample i)."""
        self.labels = labels.to(self.device)
        self.losses = torch.zeros(2, len(labels), device=self.device)
        self.visited = torch.zeros(len(labels), dtype=torch.bool, device=self.device)

    def difficulty(self, rows: Tensor, y: Tensor, ce_b: Tensor, ce_d: Tensor) -> Tensor:
        """Fold the batch's per-sample losses into the moving averages of training rows `rows`, and return each
        sample's relative difficulty from the class-normalised averages."""
        new = torch.stack([ce_b, ce_d]).detach()
        old = self.losses[:, rows]
        self.losses[:, rows] = torch.where(self.visited[rows], self.hparams.ema * old + (1 - self.hparams.ema) * new,
                                           new)
        self.visited[rows] = True
        top = self.losses.new_zeros(2, self.hparams.n_classes).scatter_reduce(
            1, self.labels.expand(2, -1), self.losses, "amax")  # each class's largest average, per model
        l_b, l_d = self.losses[:, rows] / top[:, y].clamp_min(1e-8)
        return l_b / (l_b + l_d + 1e-8)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits_b = self.biased(batch.x)
        ce_b = F.cross_entropy(logits_b, batch.y, reduction="none")
        p_y = ce_b.detach().neg().exp()
        gce = ce_b * p_y ** self.hparams.q * self.hparams.q  # the gradient of (1 - p_y^q) / q, as in Nam et al.'s code
        ce_d = self.cross_entropy(self(batch.x), batch.y)
        weight = self.difficulty(batch.e, batch.y, ce_b, ce_d)
        return (weight * ce_d).mean() + gce.mean()
