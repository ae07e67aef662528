"""GaussianGroups: the synthetic task of Sagawa et al. 2020b ("An investigation of why overparameterization
exacerbates spurious correlations"), with a Gaussian core and a Gaussian spurious input.

The label y and the attribute a are in {0, 1}; with signs s(v) = 2v - 1, a sample is x = [x_core, x_spu] with
x_core ~ N(s(y) 1, sigma_core^2 I) of dimension `d_core` and x_spu ~ N(s(a) 1, sigma_spu^2 I) of dimension `d_spu`.
The core input is noisy but always informative; the spurious one is nearly clean but agrees with the label only
in the majority groups, a fraction `majority` of the training data. The shifted split is group-balanced.
`class_share` below 1/2 also makes the training distribution class-imbalanced (with `majority: 0.5`, an
imbalance alone, with no spurious correlation). Measured in tests/test_subpop_methods.py (3 epochs, seeds 0-2):
at `class_share: 0.1` CBLoss(by=class), BSoftmax, CRT and ReWeightCRT raise the worst group's accuracy over ERM's,
and Focal and LDAM do not raise the rare class's (the noisy core, ceiling 0.84, keeps the classes overlapping); at
`class_share: 0.01` with `sigma_core: 5` (ceiling 0.977) they do, Focal by 0.11 to 0.18 and LDAM by 0.40 to 0.49.
"""

import math

import torch
from torch import Tensor

from testbed.envs.base import Batch, EnvSpec, ShiftedEnv, Split
from testbed.errors import ConfigError, check_positive


class GaussianGroups(ShiftedEnv):
    """Gaussian core and spurious inputs in four groups (y, a), majority groups a == y (Sagawa et al. 2020b's
    defaults: n = 3000, d = 100 each, sigma_core^2 = 100, sigma_spu^2 = 1, majority 0.9).

    Sub-environments: `train:corr={majority}`, `id:corr={majority}` (held out, same distribution) and
    `ood:corr=0.50` (each group a quarter: the group-balanced test split). Group proportions within each class are
    exact, not drawn. `intervene` shifts the spurious (or core) input's mean to another value, keeping its noise.

    Args:
        majority: fraction of training samples in the majority groups (a == y), in [0.5, 1].
        class_share: fraction of the training (and `id`) samples in class 1, in (0, 0.5]; the shifted split keeps
            the classes balanced.
        d_core, d_spu: dimensions of the core and the spurious input.
        sigma_core, sigma_spu: noise standard deviations of each input (Sagawa et al.: 10 and 1).
        n_train: training samples.
        n_val: held-out test samples of the training distribution, and the validation samples of each held-out
            environment (drawn apart from the test samples).
        n_test: samples of the group-balanced test split.
    """

    n_classes = 2
    interventions = ("a", "causal")

    def __init__(self, majority: float = 0.9, class_share: float = 0.5, d_core: int = 100, d_spu: int = 100,
                 sigma_core: float = 10.0, sigma_spu: float = 1.0, n_train: int = 3000, n_val: int = 1000,
                 n_test: int = 2000, batch_size: int = 3000, eval_batch_size: int = 4096, seed: int = 0) -> None:
        super().__init__(batch_size, eval_batch_size, seed)
        self.save_hyperparameters()
        if not 0.5 <= majority <= 1:
            raise ConfigError(f"majority: {majority} is outside the allowed range [0.5, 1]")
        if not 0 < class_share <= 0.5:
            raise ConfigError(f"class_share: {class_share} is outside the allowed range (0, 0.5]")
        for field, value in [("d_core", d_core), ("d_spu", d_spu), ("sigma_core", sigma_core),
                             ("sigma_spu", sigma_spu), ("n_train", n_train), ("n_val", n_val), ("n_test", n_test)]:
            check_positive(field, value)
        self.input_shape = (d_core + d_spu,)
        self.specs = [EnvSpec("train", majority), EnvSpec("id", majority), EnvSpec("ood", 0.5)]
        self.sizes = {"train": n_train, "id": n_val, "ood": n_test}

    @property
    def ceiling(self) -> float:
        """Accuracy of the best classifier of the core input alone, Phi(sqrt(d_core) / sigma_core)."""
        z = math.sqrt(self.hparams.d_core) / self.hparams.sigma_core
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    def make(self, spec: EnvSpec, index: int, split: Split) -> Batch:
        """One sub-environment's samples; held-out ones also give `n_val` validation samples, drawn apart."""
        h, n = self.hparams, self.hparams.n_val if split == "val" else self.sizes[spec.role]
        gen = self.generator(spec, split)
        # Class 1 spread evenly through the rows, exactly floor(n * share) of them (alternating at share 1/2).
        share, i = h.class_share if spec.role != "ood" else 0.5, torch.arange(n, dtype=torch.float64)
        y = (((i + 1) * share).floor() - (i * share).floor()).long()
        agree = torch.zeros(n, dtype=torch.bool)
        for k in range(2):  # in each class, exactly a fraction `corr` in the majority group
            rows = torch.nonzero(y == k).flatten()
            agree[rows[torch.randperm(len(rows), generator=gen)[:round(spec.corr * len(rows))]]] = True
        a = torch.where(agree, y, 1 - y)
        core = (2 * y - 1).float()[:, None] + h.sigma_core * torch.randn(n, h.d_core, generator=gen)
        spu = (2 * a - 1).float()[:, None] + h.sigma_spu * torch.randn(n, h.d_spu, generator=gen)
        return Batch(torch.cat([core, spu], 1), y, a, e=torch.full_like(y, index), z=torch.zeros(n, 0))

    def causal(self, batch: Batch) -> Tensor:
        return batch.y  # no label noise: the core input's mean is the label's

    def intervene(self, batch: Batch, a: Tensor | None = None, causal: Tensor | None = None) -> Tensor:
        x, d = batch.x.clone(), self.hparams.d_core
        if a is not None:
            x[:, d:] += 2 * (a - batch.a).to(x.dtype)[:, None]
        if causal is not None:
            x[:, :d] += 2 * (causal - batch.y).to(x.dtype)[:, None]
        return x
