"""Which baselines train packed (`testbed.training.packed`), and what each adds to ERM's packed step.

A baseline packs when its training step is the cross-entropy of a packable net (an `mlp` or `cnn`) on a batch of
its data, combined by arithmetic that can run for N models at once: ERM (the mean), Oracle (the mean over its own
intervened batch), GroupDRO (group weights q per model) and ReWeight (per-group loss weights per model), each
through its baseline's own loss function (`dro_loss`, `reweighted`) on `[N, ...]` state. `knobs` are the model
arguments that are per-model scalars: runs that differ only in them (and in their seed) train as one packed model.
"""

from typing import ClassVar

import torch
from torch import Tensor

from testbed.baselines import ERM, GroupDRO, Oracle, ReWeight
from testbed.baselines.balance import balance_key, inverse_frequency, reweighted
from testbed.baselines.group_dro import dro_loss
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

    @classmethod
    def packs(cls, init_args: dict) -> bool:
        """Whether a run of these model arguments trains as this packed step does (its data fixed for the fit)."""
        return True


class PackedOracle(PackedERM):
    """Each model's batch intervened as its sequential run's is, from that run's own RNG state."""

    draws = True

    def batch(self, i: int, batch: Batch) -> Batch:
        return intervened(self.envs[i], batch)


class PackedGroupDRO(PackedERM):
    """GroupDRO's `dro_loss` on q `[N, groups]`, eta `[N, 1]` and adjustment `[N, groups]`, each model's set up by
    its own `GroupDRO.start`. Natural sampling only: balanced sampling serves a fresh draw every epoch."""

    knobs = (*PackedERM.knobs, "eta", "adjustment")

    def __init__(self, models: list[Baseline], envs: list[ShiftedEnv]) -> None:
        super().__init__(models, envs)
        for model, env in zip(models, envs):
            model.start(env)
        self.n_attr = envs[0].n_attr
        self.q = torch.stack([m.q for m in models])
        self.adjust = torch.stack([m.adjust for m in models])
        self.eta = torch.tensor([[m.hparams.eta] for m in models], dtype=self.q.dtype)

    @classmethod
    def packs(cls, init_args: dict) -> bool:
        return init_args.get("sampling", "natural") == "natural"

    def loss(self, losses: Tensor, batch: Batch) -> Tensor:
        return dro_loss(self.q, losses, batch.y * self.n_attr + batch.a, self.eta, self.adjust)

    def retire(self, i: int) -> None:
        self.models[i].q = self.q[i].clone()

    def keep(self, index: list[int]) -> None:
        super().keep(index)
        self.q, self.eta, self.adjust = self.q[index], self.eta[index], self.adjust[index]


class PackedReWeight(PackedERM):
    """Each model's per-sample losses weighted by the inverse frequency of their group (or class) in its own
    training data, as `ReWeight.on_fit_start` sets the weights `[N, keys]`."""

    def __init__(self, models: list[Baseline], envs: list[ShiftedEnv]) -> None:
        super().__init__(models, envs)
        self.by = models[0].hparams.by  # `by` is not a knob: a pack shares it
        self.weights = torch.stack([inverse_frequency(self.by, env) for env in envs])

    def loss(self, losses: Tensor, batch: Batch) -> Tensor:
        return reweighted(losses, self.weights, balance_key(self.by, self.envs[0], batch)[0])

    def retire(self, i: int) -> None:
        self.models[i].weights = self.weights[i].clone()

    def keep(self, index: list[int]) -> None:
        super().keep(index)
        self.weights = self.weights[index]


# Exact classes: a subclass may change the training step.
METHODS: dict[type, type[PackedERM]] = {ERM: PackedERM, Oracle: PackedOracle, GroupDRO: PackedGroupDRO,
                                        ReWeight: PackedReWeight}
