"""ERM: empirical risk minimisation over the pooled training environments."""

from torch import Tensor

from testbed.envs.base import Batch
from testbed.training.module import Baseline


class ERM(Baseline):
    """Minimise the mean cross-entropy on the training data, whatever feature predicts it."""

    weighted_ce = True

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.erm_step(batch)
