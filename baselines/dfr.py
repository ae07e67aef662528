"""DFR: deep feature reweighting, i.e. ERM, then the last layer retrained on group-balanced held-out data
(Kirichenko et al. 2022, "Last layer re-training is sufficient for robustness to spurious correlations")."""

import torch

from testbed.baselines.erm import ERM
from testbed.envs.base import ShiftedEnv
from testbed.errors import ConfigError
from testbed.training.probe import body_and_head, heldout_head


class DFR(ERM):
    """ERM training; before testing, the head is replaced by a logistic regression on the frozen features, fit
    on group-balanced draws of the `id` environments' validation samples and averaged over draws: the probe's
    head (`testbed.training.probe`), which here becomes the model's. DFR tunes an L1 penalty on half of the validation
    data; this uses the probe's small fixed L2 penalty and all of it, so it needs no selection."""

    def check_env(self, env: ShiftedEnv) -> None:
        if env.n_attr < 2:
            raise ConfigError(f"model: DFR needs group labels (g = y * n_attr + a, from a spurious attribute with "
                              f"2 or more values); {type(env).__name__} has none")
        if not env.names("id"):
            raise ConfigError(f"model: DFR retrains its head on held-out 'id' data; {type(env).__name__} has no "
                              "'id' environment")

    @torch.no_grad()
    def on_test_start(self) -> None:
        _, head = body_and_head(self.net)
        new = heldout_head(self.net, self.env)
        head.weight.copy_(new.weight)
        head.bias.copy_(new.bias)
