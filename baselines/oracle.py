"""Oracle: the same model trained where the spurious attribute is independent of the label."""

import torch
from torch import Tensor

from testbed.envs.base import Batch, ShiftedEnv
from testbed.errors import ConfigError
from testbed.training.module import Baseline


class Oracle(Baseline):
    """ERM on interventional data: each training batch is rendered again with the attribute drawn
    uniformly, do(a ~ U), so only the causal feature predicts the label. The invariant reference."""

    def check_env(self, env: ShiftedEnv) -> None:
        if "a" not in env.interventions:
            raise ConfigError(f"model: Oracle needs an environment that can intervene on the attribute; "
                              f"{type(env).__name__} cannot")

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.erm_step(intervened(self.env, batch))


def intervened(env: ShiftedEnv, batch: Batch) -> Batch:
    """The batch rendered again with the attribute drawn uniformly from the global RNG (packed training replays
    this per packed model, `testbed.run.packed_methods`)."""
    a = torch.randint(env.n_attr, batch.a.shape, device=batch.a.device)
    return batch._replace(x=env.intervene(batch, a=a), a=a)
