"""Oracle: the same model trained where the spurious attribute is independent of the label."""

import torch
from torch import Tensor

from testbed.envs.base import Batch, ShiftedEnv
from testbed.errors import ConfigError
from testbed.module import Baseline


class Oracle(Baseline):
    """ERM on interventional data: each training batch is rendered again with the attribute drawn
    uniformly, do(a ~ U), so only the causal feature predicts the label. The invariant reference."""

    def check_env(self, env: ShiftedEnv) -> None:
        if "a" not in env.interventions:
            raise ConfigError(f"model: Oracle needs an environment that can intervene on the attribute; "
                              f"{type(env).__name__} cannot")

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        a = torch.randint(self.env.n_attr, batch.a.shape, device=batch.a.device)
        return self.erm_step(batch._replace(x=self.env.intervene(batch, a=a), a=a))
