"""GroupDRO: distributionally robust optimisation over groups (Sagawa et al. 2020)."""

import torch
from torch import Tensor

from testbed.baselines.risks import group_risks
from testbed.envs.base import Batch
from testbed.errors import check_positive
from testbed.hparams import Range
from testbed.training.module import Baseline


class GroupDRO(Baseline):
    """Minimise the worst group's risk by online mirror ascent on group weights q: after each step
    q_g <- q_g * exp(eta * risk_g), normalised, and the loss is sum_g q_g risk_g. Groups are
    g = y * n_attr + a, so the rare groups where the attribute disagrees with the label gain weight.

    Args:
        eta: step size of the group weights (Sagawa et al. 2020 and DomainBed use 0.01).
    """

    q: Tensor  # group weights: a buffer, so checkpoints keep them and a resumed fit goes on from them

    tunable = {**Baseline.tunable, "eta": Range(1e-3, 1e-1, log=True)}  # DomainBed's ranges

    def __init__(self, eta: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        check_positive("eta", eta)
        # Empty until fitting starts, when the environment's number of groups is known; a checkpoint's weights
        # replace it whatever their size.
        self.register_buffer("q", torch.empty(0))
        self.register_load_state_dict_pre_hook(self.fit_q)

    def fit_q(self, module: object, state: dict, prefix: str, *args: object) -> None:
        if prefix + "q" in state:
            self.q = torch.empty_like(state[prefix + "q"], device=self.q.device)

    def on_fit_start(self) -> None:
        if len(self.q) != self.env.n_groups:  # a fresh fit (a resumed one has its checkpoint's weights)
            self.q = torch.full((self.env.n_groups,), 1.0 / self.env.n_groups, device=self.device)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        ids, risks = group_risks(self.cross_entropy(self(batch.x), batch.y), self.env.group(batch))
        self.q[ids] *= torch.exp(self.hparams.eta * risks.detach())
        self.q /= self.q.sum()
        return (self.q[ids] * risks).sum()
