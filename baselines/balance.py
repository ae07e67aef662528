"""ReSample and ReWeight: balance the training groups (or classes) by subsampling or by loss weights
(SUBG, SUBY, RWG and RWY of Idrissi et al. 2022, "Simple data balancing achieves competitive worst-group-accuracy")."""

from typing import ClassVar, Literal

import torch
from torch import Tensor

from testbed.envs.base import Batch, ShiftedEnv
from testbed.errors import ConfigError
from testbed.training.module import Baseline

By = Literal["group", "class"]


def require_groups(env: ShiftedEnv, who: str) -> None:
    """Refuse an environment whose samples carry no spurious-attribute labels to form groups from."""
    if env.n_attr < 2:
        raise ConfigError(f"model: {who} needs group labels (g = y * n_attr + a, from a spurious attribute with "
                          f"2 or more values); {type(env).__name__} has none")


def check_by(by: str) -> None:
    if by not in ("group", "class"):
        raise ConfigError(f"by: {by!r} is not allowed; choose one of group, class")


def balance_key(by: By, env: ShiftedEnv, batch: Batch) -> tuple[Tensor, int]:
    """Each sample's balancing key, its group or its class (`by`), and the number of keys."""
    return (env.group(batch), env.n_groups) if by == "group" else (batch.y, env.n_classes)


def key_counts(by: By, env: ShiftedEnv) -> Tensor:
    """How many training samples each group (or class) has, in float64."""
    keys, n_keys = balance_key(by, env, env.train_data)
    return torch.bincount(keys, minlength=n_keys).double()


def mean_one(raw: Tensor, counts: Tensor) -> Tensor:
    """Per-key weights proportional to `raw`, scaled so that the training samples' mean weight is 1 (the loss keeps
    ERM's scale, so learning rates transfer); 0 for a key absent from the training data."""
    seen = counts > 0
    weights = torch.zeros_like(counts)
    weights[seen] = raw[seen] * counts.sum() / (counts[seen] * raw[seen]).sum()
    return weights.float()


def inverse_frequency(by: By, env: ShiftedEnv, power: float = 1.0) -> Tensor:
    """Each key's loss weight, proportional to n_k^-power over the keys present in the training data: n / (K n_k)
    for K keys at power 1, so that every key weighs the same in the objective."""
    counts = key_counts(by, env)
    return mean_one(counts.clamp_min(1) ** -power, counts)


def reweighted(losses: Tensor, weights: Tensor, keys: Tensor) -> Tensor:
    """The mean of per-sample `losses` `[..., B]` each weighted by its key's weight (`weights` `[..., K]`, `keys`
    `[..., B]`): ReWeight's loss, for one model or N packed ones at once."""
    return (weights.gather(-1, keys) * losses).mean(-1)


class Balanced:
    """A `by` choice, balance the (label, attribute) groups or only the classes, checked once for every method that
    balances (ReSample, ReWeight and its variants, CRT). Mixed into a `Baseline` before it
    (`class ReSample(Balanced, Baseline)`), so that it is no baseline of its own to choose."""

    def __init__(self, by: By = "group", **kwargs) -> None:
        super().__init__(**kwargs)
        check_by(by)

    def check_env(self, env: ShiftedEnv) -> None:
        if self.hparams.by == "group":
            require_groups(env, f"{type(self).__name__}(by=group)")


class ReSample(Balanced, Baseline):
    """SUBG / SUBY: ERM on a subsample of the training data in which every group (or class) keeps as many samples
    as the smallest one has, drawn once when fitting starts (Idrissi et al. 2022; the "subsampling" of Sagawa et
    al. 2020b). Discards data, and with it the majority's spurious shortcut.

    Args:
        by: balance the (label, attribute) groups (SUBG; needs group labels) or only the classes (SUBY).
    """

    kept: int | None = None  # training samples in the subsample, set when fitting starts
    weighted_ce = True

    def on_fit_start(self) -> None:
        data = self.env.train_data
        keys, n_keys = balance_key(self.hparams.by, self.env, data)
        counts = torch.bincount(keys, minlength=n_keys)
        smallest = int(counts[counts > 0].min())
        gen = torch.Generator().manual_seed(self.env.seed)
        rows = [torch.nonzero(keys == k).flatten() for k in range(n_keys) if counts[k] > 0]
        kept = torch.cat([r[torch.randperm(len(r), generator=gen)[:smallest].to(r.device)] for r in rows]).sort()[0]
        self.env.served = Batch(*(t[kept] for t in data))
        self.kept = len(kept)

    def extra_results(self) -> dict[str, object]:
        return {"resample": {"by": self.hparams.by, "kept": self.kept}}

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.erm_step(batch)


class ReWeight(Balanced, Baseline):
    """RWG / RWY: cross-entropy weighted by the inverse frequency of each sample's group (or class) in the training
    data, n / (K n_k) for K groups, so that every group weighs the same in the objective (the "upweighting" of
    Sagawa et al. 2020b; Idrissi et al. 2022). Keeps every sample; the loss is reweighted, not the sampling.

    Args:
        by: weight by (label, attribute) group (RWG; needs group labels) or by class (RWY).
    """

    weights: Tensor
    power: ClassVar[float] = 1.0  # weights proportional to n_k^-power
    weighted_ce = True

    def key_weights(self) -> Tensor:
        """Each group's (or class's) loss weight, from the training data's counts."""
        return inverse_frequency(self.hparams.by, self.env, self.power)

    def on_fit_start(self) -> None:
        self.weights = self.key_weights().to(self.device)

    def sample_weights(self, batch: Batch) -> Tensor:
        """Each sample's loss weight, its group's (or class's), as `reweighted` gathers it."""
        keys = balance_key(self.hparams.by, self.env, batch)[0]
        return self.weights.to(keys.device).gather(-1, keys)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        losses = self.cross_entropy(self(batch.x), batch.y)
        return reweighted(losses, self.weights, balance_key(self.hparams.by, self.env, batch)[0])



class SqrtReWeight(ReWeight):
    """ReWeight with weights proportional to n_k^-1/2, the square root of the inverse frequency: the minority
    groups (or classes) gain weight, less than under ReWeight (SubpopBench's `SqrtReWeight`, Yang et al. 2023,
    "Change is hard"; the square-root sampling of Mahajan et al. 2018 as a loss weight).

    Args:
        by: weight by (label, attribute) group (needs group labels) or by class.
    """

    power = 0.5


class CBLoss(ReWeight):
    """Class-balanced loss (Cui et al. 2019, "Class-balanced loss based on effective number of samples"): each
    group's (or class's) loss weight is proportional to the inverse of its effective number of samples,
    (1 - beta) / (1 - beta^n_k). At beta = 0 every key weighs alike per sample (ERM); as beta -> 1 the weight tends
    to 1 / n_k (ReWeight). Weights are scaled to a mean of 1 per training sample (SubpopBench scales them to sum to
    the number of groups; the ratios, which are what matters, are the same).

    Args:
        beta: the effective-number parameter in [0, 1) (Cui et al. and SubpopBench default 0.9999).
        by: weight by (label, attribute) group (SubpopBench's choice; needs group labels) or by class (Cui et al.'s).
    """

    # SubpopBench draws beta = 1 - 10^U(-5, -2) (hparams_registry.py); a Range cannot draw 1 - beta log-uniformly, so
    # these are its decades (Cui et al. search 0.9 to 0.9999 by decades too).
    tunable = {**Baseline.tunable, "beta": [0.99, 0.999, 0.9999, 0.99999]}

    def __init__(self, beta: float = 0.9999, by: By = "group", **kwargs) -> None:
        super().__init__(by=by, **kwargs)
        if not 0 <= beta < 1:
            raise ConfigError(f"beta: {beta} is outside the allowed range [0, 1)")

    def key_weights(self) -> Tensor:
        counts = key_counts(self.hparams.by, self.env)
        return mean_one((1 - self.hparams.beta) / (1 - self.hparams.beta ** counts.clamp_min(1)), counts)
