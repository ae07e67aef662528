"""Each method's objective as its paper or peer code defines it, on small cases with known answers: IRM's and VREx's
L2 weight after the 1/penalty_weight rescaling, DomainBed's Adam reset and split-half IRM penalty, LfF's moving
averages and FLOPs, Mixup's one draw per pair, and the tunable ranges cited from DomainBed and SubpopBench."""

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from testbed.baselines import CORAL, ERM, IRM, MMD, LfF, Mixup, VREx
from testbed.baselines.irm import irm_penalty
from testbed.envs import GaussianGroups
from testbed.envs.base import Batch
from testbed.hparams import Range, draw_all


def applied_gradient(model: L.LightningModule, step: int) -> list[torch.Tensor]:
    """The gradient Adam applies at `step` (its coupled weight decay included) when the mean risk is the sum of the
    parameters (gradient 1 everywhere) and the penalty is 0."""
    params = list(model.net.parameters())
    risk = sum(p.sum() for p in params)
    model.zero_grad()
    model.objective(risk[None], risk.new_zeros(()), step).backward()
    decay = model.configure_optimizers().param_groups[0]["weight_decay"]
    return [p.grad + decay * p.detach() for p in params]


@pytest.mark.parametrize("method", [IRM, VREx])
def test_the_l2_weight_relative_to_the_risk_is_weight_decay_before_and_after_annealing(method):
    # Arjovsky et al. divide risk + lambda penalty + L2 by lambda: relative to the risk's gradient (here 1), the L2
    # gradient stays weight_decay * theta. Adam's coupled decay, not divided, would make it lambda times that.
    wd, weight = 2e-3, 1e4
    torch.manual_seed(0)
    model = method(input_shape=(6,), width=8, depth=1, weight_decay=wd, penalty_weight=weight, anneal_steps=5)
    model.double()  # float32 would round g * 1e4 - 1 to about 1e-7, the size of the L2 term's smallest entries
    for step, scale in [(0, 1.0), (5, weight)]:
        for g, p in zip(applied_gradient(model, step), model.net.parameters()):
            torch.testing.assert_close(g * scale - 1, wd * p.detach(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("reset", [True, False])
def test_adam_starts_afresh_at_the_first_full_weight_step_where_asked(reset):
    env = GaussianGroups(n_train=256, batch_size=64, n_val=64, n_test=64)
    model = IRM(input_shape=env.input_shape, width=8, depth=1, anneal_steps=3, reset_adam=reset, probe=False)
    L.Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0).fit(model, env)
    steps = {int(s["step"]) for s in model.trainer.optimizers[0].state.values()}
    assert steps == ({3} if reset else {6})  # steps 3, 4, 5 after the reset


def test_the_split_half_penalty_is_unbiased_and_the_squared_one_is_not():
    """Over many batches of one population, DomainBed's split-half penalty averages to the squared gradient of the
    population's risk (with respect to the classifier scale), while Arjovsky et al.'s square of the batch's gradient
    adds its variance. Measured over generator seeds 0, 1, 2 (2000 batches of 16 per environment; population value
    0.88 to 1.02): the split-half mean is within 0.028 of it, the squared one 0.15 to 0.19 above it."""
    gen = torch.Generator().manual_seed(0)
    logits, y = torch.randn(4000, 2, generator=gen) * 2, torch.randint(2, (4000,), generator=gen)
    e = torch.arange(4000) % 2
    scale = torch.ones((), requires_grad=True)
    truth = torch.stack([torch.autograd.grad(F.cross_entropy(logits[e == k] * scale, y[e == k]), scale)[0]
                         for k in (0, 1)]).pow(2).mean().item()
    means = []
    for unbiased in (True, False):
        total = 0.0
        for _ in range(2000):
            picks = [torch.nonzero(e == k).flatten()[torch.randperm(2000, generator=gen)[:16]] for k in (0, 1)]
            rows = torch.cat(picks)
            total += irm_penalty(logits[rows], y[rows], e[rows], unbiased)[1].item()
        means.append(total / 2000)
    assert abs(means[0] - truth) < 0.06 and means[1] > truth + 0.1


def test_lff_weights_by_class_normalised_moving_averages_of_the_losses():
    model = LfF(input_shape=(4,), width=8, depth=1)
    model.start_averages(torch.tensor([0, 0, 1, 1]))
    first = model.difficulty(torch.tensor([0, 2]), torch.tensor([0, 1]), torch.tensor([1.0, 2.0]),
                             torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(first, torch.tensor([0.5, 0.5]))
    # Row 0's averages move to 0.7 * 1 + 0.3 * 3 = 1.6 (biased) and 1 (debiased); row 1's first visit sets 0.5 and 2.
    # Class 0's largest averages are 1.6 and 2: L_b = (1, 0.3125), L_d = (0.5, 1).
    second = model.difficulty(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([3.0, 0.5]),
                              torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(second, torch.tensor([1 / 1.5, 0.3125 / 1.3125]))


def test_lff_counts_the_flops_of_both_models():
    shape = {"input_shape": (3, 8, 8), "width": 16, "depth": 2}
    assert LfF(**shape).flops_per_sample == 2 * ERM(**shape).flops_per_sample


def test_mixup_draws_one_mixing_weight_per_pair_of_environments(monkeypatch):
    draws = []
    sample = torch.distributions.Beta.sample
    monkeypatch.setattr(torch.distributions.Beta, "sample", lambda self, *a: draws.append(1) or sample(self, *a))
    x, y = torch.randn(12, 4), torch.randint(2, (12,))
    batch = Batch(x, y, y, torch.arange(12) % 3, torch.zeros(12, 0))
    Mixup(input_shape=(4,), width=8, depth=1).training_step(batch, 0)
    assert len(draws) == 3  # three environments: three cyclic pairs, as DomainBed's random_pairs_of_minibatches


@pytest.mark.parametrize(("method", "knob", "cited"), [
    (Mixup, "alpha", Range(0.1, 10.0, log=True)),  # DomainBed and SubpopBench: mixup_alpha 10^U(-1, 1)
    (CORAL, "gamma", Range(0.1, 10.0, log=True)),  # mmd_gamma 10^U(-1, 1)
    (MMD, "gamma", Range(0.1, 10.0, log=True)),
    (LfF, "q", Range(0.05, 0.95)),  # SubpopBench: LfF_q U(0.05, 0.95)
])
def test_default_ranges_are_the_cited_ones_and_draw_inside_them(method, knob, cited):
    assert method.tunable[knob] == cited and {"lr", "weight_decay"} <= set(method.tunable)
    values = [d[knob] for d in draw_all(method.tunable, 50, 0)]
    assert all(cited.low <= v <= cited.high for v in values)
    spread = [math.log(v) if cited.log else v for v in values]
    width = math.log(cited.high / cited.low) if cited.log else cited.high - cited.low
    assert max(spread) - min(spread) > 0.5 * width  # the draws cover the range
