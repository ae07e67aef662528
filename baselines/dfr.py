"""DFR: deep feature reweighting, i.e. ERM, then the last layer retrained on group-balanced held-out data
(Kirichenko et al. 2022, "Last layer re-training is sufficient for robustness to spurious correlations")."""

import torch
from torch import Tensor, nn

from testbed.baselines.erm import ERM
from testbed.envs.base import Batch, ShiftedEnv
from testbed.errors import ConfigError
from testbed.training.probe import Retrained, body_and_head, heldout_head


class DFR(ERM):
    """ERM training; before testing, the head is replaced by DFR's (`testbed.training.probe.fit_head`, the probe's
    head): an L1 logistic regression on the frozen features whose C is chosen by worst-group accuracy on one half of
    the `id` environments' held-out samples after fitting on the other, then refit on all of them over 20
    group-balanced draws and averaged. The held-out samples are the environment's `retraining_data`: the validation
    samples, or (WILDS) the whole validation split, as Kirichenko et al. use it; there the `id` test metrics are
    in-sample, and `results.json` lists those environments under `dfr`.

    Validation metrics stay out of sample: each `id` environment's are those of the head fit with the chosen C on
    the first half alone, scored on its second half (the final head has seen every held-out sample); the `ood`
    environments' are the final head's on their own validation samples."""

    retrained: Retrained | None = None  # the head's fit, from the last test start

    def check_env(self, env: ShiftedEnv) -> None:
        if env.n_attr < 2:
            raise ConfigError(f"model: DFR needs group labels (g = y * n_attr + a, from a spurious attribute with "
                              f"2 or more values); {type(env).__name__} has none")
        if not env.names("id"):
            raise ConfigError(f"model: DFR retrains its head on held-out 'id' data; {type(env).__name__} has no "
                              "'id' environment")

    @torch.no_grad()
    def on_test_start(self) -> None:
        self.retrained = heldout_head(self.net, self.env, retraining=True)
        set_head(self.net, self.retrained.head)

    def val_tallies(self, env: ShiftedEnv, names: list[str]) -> dict[str, Tensor]:
        fit, ids = self.retrained, env.names("id")
        if fit is None:  # not tested yet: the ERM head, scored as any model's
            return super().val_tallies(env, names)
        tallies = super().val_tallies(env, [n for n in names if n not in ids])
        _, head = body_and_head(self.net)
        final = head.weight.clone(), head.bias.clone()
        set_head(self.net, fit.half_head)
        try:
            for name in (n for n in names if n in ids):
                data = env.retraining_data(name)
                tallies[name] = self.tally_data(env, Batch(*(t[fit.held_out[name]] for t in data)))[0]
        finally:
            with torch.no_grad():
                head.weight.copy_(final[0])
                head.bias.copy_(final[1])
        return {name: tallies[name] for name in names}

    def extra_results(self) -> dict[str, object]:
        env, fit = self.env, self.retrained
        if fit is None:
            return {}
        in_sample = [n for n in env.names("id") if env.retraining_data(n) is not env.val_data[n]]
        return {"dfr": {"c": fit.c, "in_sample_test": in_sample}}


@torch.no_grad()
def set_head(net: nn.Module, head: nn.Linear) -> None:
    """Copy `head`'s weights into `net`'s linear head (`net` itself if it is one)."""
    target = net if isinstance(net, nn.Linear) else body_and_head(net)[1]
    target.weight.copy_(head.weight)
    target.bias.copy_(head.bias)
