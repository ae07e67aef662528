"""CVaRDRO: distributionally robust optimisation over every subpopulation of at least a given mass (Levy et al.
2020, "Large-scale methods for distributionally robust optimization"; SubpopBench's `CVaRDRO`)."""

import math

from torch import Tensor

from testbed.envs.base import Batch
from testbed.errors import ConfigError
from testbed.hparams import Range
from testbed.training.module import Baseline


def cvar(losses: Tensor, alpha: float) -> Tensor:
    """The conditional value at risk of the batch's losses at level `alpha`: the mean of its worst `alpha` fraction,
    the largest floor(alpha m) losses weighted 1 / (alpha m) each and the next one the remainder (the best response
    of Levy et al.'s batch estimator without its entropy term, which SubpopBench also sets to 0)."""
    k = alpha * len(losses)
    whole = min(math.floor(k), len(losses))
    top = losses.topk(min(whole + 1, len(losses))).values
    total = top[:whole].sum()
    if whole < len(top):
        total = total + (k - whole) * top[whole]
    return total / k


class CVaRDRO(Baseline):
    """Minimise the CVaR of the per-sample cross-entropy in each batch: the worst-case risk over every
    subpopulation that makes up at least a fraction `alpha` of the data. Needs no group labels: the rare groups the
    spurious rule gets wrong are among the highest losses. `alpha` = 1 is ERM.

    Args:
        alpha: the smallest subpopulation's mass, in (0, 1] (SubpopBench's default 0.1).
    """

    tunable = {**Baseline.tunable, "alpha": Range(0.01, 1.0, log=True)}  # SubpopBench: 10^U(-2, 0)

    def __init__(self, alpha: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 < alpha <= 1:
            raise ConfigError(f"alpha: {alpha} is outside the allowed range (0, 1]")

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return cvar(self.cross_entropy(self(batch.x), batch.y), self.hparams.alpha)
