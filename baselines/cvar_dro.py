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

    No regime with a gain over ERM has been found. Measured on GaussianGroups (width-64 MLP, batches of 100, seeds
    0, 1, 2), worst-group accuracy on the balanced split: majority 0.9, 3 epochs, ERM 0.434 / 0.358 / 0.430, alpha
    0.1 0.334 / 0.398 / 0.378, 0.05 0.256 / 0.366 / 0.366, 0.2 0.350 / 0.346 / 0.358; majority 0.97: ERM 0.184 /
    0.154 / 0.188, alpha 0.1 0.064 / 0.044 / 0.084; 10 epochs at majority 0.9: ERM 0.422 / 0.392 / 0.462, alpha 0.1
    0.394 / 0.350 / 0.406, 0.3 0.402 / 0.396 / 0.444; with a cleaner core (sigma_core 5, majority 0.9 or 0.95)
    alpha 0.1 is within 0.05 of ERM. SubpopBench (Yang et al. 2023) also finds CVaRDRO close to ERM, and Hu et
    al. 2018 ("Does distributionally robust supervised learning give robust classifiers?") show that, for
    classification, DRO without group structure ends with ERM's classifier (exactly so under the 0-1 loss). Its
    test asserts what it does achieve, its objective: the CVaR of its training losses is 0.05 to 0.18 below ERM's
    (seeds 0 to 4), at a mean training loss of about 0.46 against ERM's 0.10.

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
