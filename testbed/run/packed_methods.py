"""Which baselines train packed (`testbed.training.packed`), and what each adds to ERM's packed step.

A baseline packs when its training step is the cross-entropy of a packable net (an `mlp` or `cnn`) on a batch of
its data, combined by arithmetic that can run for N models at once: ERM (the mean), Oracle (the mean over its own
intervened batch), GroupDRO (group weights q per model) and ReWeight (per-group loss weights per model). `knobs`
are the model arguments that are per-model scalars: runs that differ only in them (and in their seed) train as one
packed model.
"""

from typing import ClassVar

import torch
from torch import Tensor

from testbed.baselines import ERM, GroupDRO, Oracle, ReWeight
from testbed.baselines.balance import balance_key, inverse_frequency
from testbed.baselines.oracle import intervened
from testbed.envs.base import Batch, ShiftedEnv
from testbed.training.module import Baseline
from testbed.training.packed import Method


class PackedERM(Method):
    knobs: ClassVar[tuple[str, ...]] = ("lr", "weight_decay")

    def __init__(self, models: list[Baseline], envs: list[ShiftedEnv]) -> None:
        self.models, self.envs = models, envs

    def keep(self, index: list[int]) -> None:
        self.models, self.envs = [self.models[i] for i in index], [self.envs[i] for i in index]


class PackedOracle(PackedERM):
    """Each model's batch intervened as its sequential run's is, from that run's own RNG state."""

    draws = True

    def batch(self, i: int, batch: Batch) -> Batch:
        return intervened(self.envs[i], batch)


class PackedGroupDRO(PackedERM):
    """GroupDRO's online mirror ascent with q `[N, groups]` and eta `[N]`. A group absent from a batch has risk
    0 here, so its weight is multiplied by exp(0) = 1 and adds 0 to the loss: the sequential update, which
    touches only the groups present, to float rounding."""

    knobs = (*PackedERM.knobs, "eta")

    def __init__(self, models: list[Baseline], envs: list[ShiftedEnv]) -> None:
        super().__init__(models, envs)
        self.n_attr, n_groups = envs[0].n_attr, envs[0].n_groups
        self.q = torch.full((len(models), n_groups), 1.0 / n_groups)
        self.eta = torch.tensor([[m.hparams.eta] for m in models], dtype=self.q.dtype)

    def loss(self, losses: Tensor, batch: Batch) -> Tensor:
        g = batch.y * self.n_attr + batch.a
        sums = torch.zeros_like(self.q).scatter_add_(1, g, losses)
        counts = torch.zeros_like(self.q).scatter_add_(1, g, torch.ones_like(losses))
        risks = sums / counts.clamp(min=1)
        self.q *= torch.exp(self.eta * risks.detach())
        self.q /= self.q.sum(1, keepdim=True)
        return (self.q * risks).sum(1)

    def retire(self, i: int) -> None:
        self.models[i].q = self.q[i].clone()

    def keep(self, index: list[int]) -> None:
        super().keep(index)
        self.q, self.eta = self.q[index], self.eta[index]


class PackedReWeight(PackedERM):
    """Each model's per-sample losses weighted by the inverse frequency of their group (or class) in its own
    training data, as `ReWeight.on_fit_start` sets the weights `[N, keys]`."""

    def __init__(self, models: list[Baseline], envs: list[ShiftedEnv]) -> None:
        super().__init__(models, envs)
        self.by = models[0].hparams.by  # `by` is not a knob: a pack shares it
        self.weights = torch.stack([inverse_frequency(self.by, env) for env in envs])

    def loss(self, losses: Tensor, batch: Batch) -> Tensor:
        keys = balance_key(self.by, self.envs[0], batch)[0]
        return (self.weights.gather(1, keys) * losses).mean(1)

    def retire(self, i: int) -> None:
        self.models[i].weights = self.weights[i].clone()

    def keep(self, index: list[int]) -> None:
        super().keep(index)
        self.weights = self.weights[index]


# Exact classes: a subclass may change the training step.
METHODS: dict[type, type[PackedERM]] = {ERM: PackedERM, Oracle: PackedOracle, GroupDRO: PackedGroupDRO,
                                        ReWeight: PackedReWeight}
