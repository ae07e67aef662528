"""Reproducible splits of a fixed dataset (a real one, loaded from disk) into training and held-out parts.

A plug-in environment over a fixed set of samples, e.g. scikit-learn's 8x8 digits, must train on some and evaluate
on others. `split` deals the dataset's indices once, by a permutation seeded with `seed` alone: the same arguments
give the same parts on every machine and in every run, the parts never share a sample, and asking for more
training samples extends the smaller training part instead of drawing another one (the held-out part does not
depend on how many training samples are taken), so data-size sweeps compare like with like.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from testbed.envs.base import Batch
from testbed.errors import ConfigError, check_positive


def split(n: int, held_out: int | Sequence[int], n_train: int | None = None, seed: int = 0) -> list[Tensor]:
    """Indices into a dataset of `n` samples: `[training, held-out part 1, held-out part 2, ...]`, disjoint.
    `held_out` gives the size of each held-out part (e.g. `[500, 1000]` for validation and test samples); the
    training part is the first `n_train` of the remaining samples (all of them by default)."""
    sizes = [held_out] if isinstance(held_out, int) else list(held_out)
    check_positive("n", n)
    for size in sizes:
        check_positive("held_out", size)
    rest = n - sum(sizes)
    n_train = rest if n_train is None else n_train
    check_positive("n_train", n_train)
    if n_train > rest:
        raise ConfigError(f"n_train: {n_train} is not allowed; {n} samples less {sum(sizes)} held out leave {rest}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
    parts = [order[lo:hi] for lo, hi in zip(bounds, bounds[1:])]
    return [order[bounds[-1]:bounds[-1] + n_train], *parts]


def take(data: Batch, index: Tensor) -> Batch:
    """The samples of `data` at `index`."""
    return Batch(*(t[index] for t in data))
