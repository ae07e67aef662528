"""ReSample and ReWeight: balance the training groups (or classes) by subsampling or by loss weights
(SUBG, SUBY, RWG and RWY of Idrissi et al. 2022, "Simple data balancing achieves competitive worst-group-accuracy")."""

from typing import Literal

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


def inverse_frequency(by: By, env: ShiftedEnv) -> Tensor:
    """Each key's loss weight, n / (K n_k) over the K keys present in the training data (0 for an absent key)."""
    keys, n_keys = balance_key(by, env, env.train_data)
    counts = torch.bincount(keys, minlength=n_keys).double()
    seen = counts > 0
    weights = torch.zeros_like(counts)
    weights[seen] = counts.sum() / (seen.sum() * counts[seen])
    return weights.float()


def reweighted(losses: Tensor, weights: Tensor, keys: Tensor) -> Tensor:
    """The mean of per-sample `losses` `[..., B]` each weighted by its key's weight (`weights` `[..., K]`, `keys`
    `[..., B]`): ReWeight's loss, for one model or N packed ones at once."""
    return (weights.gather(-1, keys) * losses).mean(-1)


class ReSample(Baseline):
    """SUBG / SUBY: ERM on a subsample of the training data in which every group (or class) keeps as many samples
    as the smallest one has, drawn once when fitting starts (Idrissi et al. 2022; the "subsampling" of Sagawa et
    al. 2020b). Discards data, and with it the majority's spurious shortcut.

    Args:
        by: balance the (label, attribute) groups (SUBG; needs group labels) or only the classes (SUBY).
    """

    kept: int | None = None  # training samples in the subsample, set when fitting starts

    def __init__(self, by: By = "group", **kwargs) -> None:
        super().__init__(**kwargs)
        check_by(by)

    def check_env(self, env: ShiftedEnv) -> None:
        if self.hparams.by == "group":
            require_groups(env, f"{type(self).__name__}(by=group)")

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


class ReWeight(Baseline):
    """RWG / RWY: cross-entropy weighted by the inverse frequency of each sample's group (or class) in the training
    data, n / (K n_k) for K groups, so that every group weighs the same in the objective (the "upweighting" of
    Sagawa et al. 2020b; Idrissi et al. 2022). Keeps every sample; the loss is reweighted, not the sampling.

    Args:
        by: weight by (label, attribute) group (RWG; needs group labels) or by class (RWY).
    """

    weights: Tensor

    def __init__(self, by: By = "group", **kwargs) -> None:
        super().__init__(**kwargs)
        check_by(by)

    def check_env(self, env: ShiftedEnv) -> None:
        if self.hparams.by == "group":
            require_groups(env, f"{type(self).__name__}(by=group)")

    def on_fit_start(self) -> None:
        self.weights = inverse_frequency(self.hparams.by, self.env).to(self.device)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        losses = self.cross_entropy(self(batch.x), batch.y)
        return reweighted(losses, self.weights, balance_key(self.hparams.by, self.env, batch)[0])
