"""SubpopBench's further methods against ERM on GaussianGroups, with margins measured over seeds 0, 1, 2
(3000 training samples, batches of 100, 3 epochs, a width-64 MLP; each run about 0.4 s), under the hashed shuffle
order (`envs.base.shuffle_seed`).

Spurious regime (the defaults, majority 0.9), worst-group accuracy on the group-balanced split: ERM 0.434 / 0.358 /
0.430, SqrtReWeight 0.532 / 0.546 / 0.556, ReWeight 0.650 / 0.688 / 0.658, CBLoss 0.646 / 0.682 / 0.654, LISA
0.722 / 0.746 / 0.686. Class-imbalanced regime (majority 0.5, class_share 0.1: no spurious correlation, class 1 a
tenth of training): ERM 0.376 / 0.322 / 0.398, CBLoss(by=class) 0.650 / 0.706 / 0.690, BSoftmax 0.684 / 0.706 /
0.724, CRT(by=class) 0.606 / 0.594 / 0.578, ReWeightCRT(by=class) 0.582 / 0.596 / 0.610. Under the earlier
`seed + epoch` order the smallest gains were SqrtReWeight 0.14, LISA 0.31 and CRT 0.20."""

import lightning as L
import pytest
import torch

from testbed.baselines import (
    CRT,
    ERM,
    LDAM,
    LISA,
    BSoftmax,
    CBLoss,
    CVaRDRO,
    Focal,
    ReWeight,
    ReWeightCRT,
    SqrtReWeight,
)
from testbed.baselines.cvar_dro import cvar
from testbed.envs import GaussianGroups

SEEDS = (0, 1, 2)
SPURIOUS = dict(n_train=3000, batch_size=100, n_val=500, n_test=2000)
IMBALANCED = dict(SPURIOUS, majority=0.5, class_share=0.1)
# Focal and LDAM show no gain in IMBALANCED (class-1 accuracy on the balanced split: ERM 0.422 / 0.365 / 0.410, Focal
# 0.385 / 0.392 / 0.388, LDAM 0.377 / 0.391 / 0.462), where the core input's noise (ceiling 0.84) keeps the classes
# overlapping. Their regime is a rarer class on a cleaner core: class_share 0.01 (30 of the 3000 training samples in
# class 1) and sigma_core 5 (ceiling Phi(2) = 0.977), where ERM barely learns class 1 in 3 epochs: ERM 0.102 / 0.039
# / 0.029, Focal (gamma 1) 0.283 / 0.157 / 0.135, LDAM 0.536 / 0.531 / 0.425 (Focal with Lin et al.'s gamma 2:
# 0.341 / 0.240 / 0.232).
RARE_CLASS = dict(SPURIOUS, majority=0.5, class_share=0.01, sigma_core=5.0)


def balanced_split_hits(method: type, env_kw: dict, seed: int, **kwargs) -> tuple[torch.Tensor, ...]:
    """Whether each sample of the balanced split is classified right by a model trained for 3 epochs, with its
    label and its group."""
    L.seed_everything(seed, verbose=False)
    env = GaussianGroups(seed=seed, **env_kw)
    model = method(n_classes=2, input_shape=env.input_shape, width=64, depth=2, lr=1e-3, probe=False, **kwargs)
    L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0).fit(model, env)
    batch = env.data["ood:corr=0.50"]
    with torch.no_grad():
        return (model.eval()(batch.x).argmax(1) == batch.y).float(), batch.y, env.group(batch)


def worst_group(method: type, env_kw: dict, seed: int, **kwargs) -> float:
    """Worst-group accuracy on the balanced split of a model trained for 3 epochs."""
    right, _, g = balanced_split_hits(method, env_kw, seed, **kwargs)
    return min(right[g == k].mean().item() for k in g.unique())


def minority_class(method: type, env_kw: dict, seed: int, **kwargs) -> float:
    """Accuracy on class 1 (the rare class when `class_share` < 1/2) on the balanced split."""
    right, y, _ = balanced_split_hits(method, env_kw, seed, **kwargs)
    return right[y == 1].mean().item()


@pytest.fixture(scope="module")
def erm() -> dict[str, list[float]]:
    return {"spurious": [worst_group(ERM, SPURIOUS, s) for s in SEEDS],
            "imbalanced": [worst_group(ERM, IMBALANCED, s) for s in SEEDS]}


@pytest.mark.parametrize(("method", "regime", "kwargs", "margin"), [
    (SqrtReWeight, "spurious", {}, 0.07), (CBLoss, "spurious", {}, 0.15), (LISA, "spurious", {}, 0.2),
    (CBLoss, "imbalanced", {"by": "class"}, 0.25), (BSoftmax, "imbalanced", {}, 0.25),
    (CRT, "imbalanced", {"by": "class"}, 0.15), (ReWeightCRT, "imbalanced", {"by": "class"}, 0.15)],
    ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_method_raises_worst_group_accuracy_over_erm(erm, method, regime, kwargs, margin):
    env_kw = SPURIOUS if regime == "spurious" else IMBALANCED
    for seed, base in zip(SEEDS, erm[regime]):
        assert worst_group(method, env_kw, seed, **kwargs) >= base + margin, seed


@pytest.fixture(scope="module")
def erm_rare_class() -> list[float]:
    return [minority_class(ERM, RARE_CLASS, s) for s in SEEDS]


@pytest.mark.parametrize(("method", "margin"), [(Focal, 0.08), (LDAM, 0.3)], ids=lambda v: getattr(v, "__name__", None))
def test_imbalance_loss_raises_rare_class_accuracy_over_erm(erm_rare_class, method, margin):
    # Lin et al. 2017 (Focal) and Cao et al. 2019 (LDAM): the rare class's accuracy rises over ERM's.
    for seed, base in zip(SEEDS, erm_rare_class):
        assert minority_class(method, RARE_CLASS, seed) >= base + margin, seed


def test_sqrt_reweight_upweights_the_minority_less_than_reweight():
    # Its weights are the square root of ReWeight's ratios, and its worst group lies between ERM's and ReWeight's
    # (measured gaps to ReWeight 0.102 to 0.142).
    env = GaussianGroups(**SPURIOUS)
    env.setup()
    rw, sq = (m(input_shape=env.input_shape) for m in (ReWeight, SqrtReWeight))
    rw.trainer = sq.trainer = L.Trainer(logger=False)
    rw.trainer.datamodule = env
    w_rw, w_sq = rw.key_weights(), sq.key_weights()
    assert torch.allclose(w_sq / w_sq[0], (w_rw / w_rw[0]).sqrt())
    for seed in SEEDS:
        assert worst_group(SqrtReWeight, SPURIOUS, seed) <= worst_group(ReWeight, SPURIOUS, seed) - 0.05


def test_cvar_is_the_mean_of_the_worst_alpha_fraction():
    losses = torch.tensor([4.0, 1.0, 3.0, 2.0])
    assert cvar(losses, 0.5).item() == pytest.approx(3.5)
    assert cvar(losses, 0.375).item() == pytest.approx((4 + 0.5 * 3) / 1.5)
    assert cvar(losses, 1.0).item() == pytest.approx(2.5)
    assert cvar(losses, 0.1).item() == pytest.approx(4.0)


def test_cvar_dro_lowers_the_risk_of_its_worst_tenth_of_training_samples_at_a_price_in_the_mean():
    """What CVaRDRO exists for is its objective: the mean loss of the worst alpha fraction of the data. Measured
    on the spurious regime (alpha 0.1, seeds 0 to 4), the CVaR at 0.1 of the trained model's training losses: ERM
    0.768 / 0.859 / 0.702 / 0.828 / 0.723, CVaRDRO 0.660 / 0.675 / 0.656 / 0.667 / 0.660 (0.046 to 0.184 lower),
    while its mean training loss rises from about 0.10 to 0.45-0.49: it flattens the losses rather than fitting the
    majority. (Its worst-group test accuracy shows no gain: the class docstring.)"""
    def training_losses(method: type, seed: int, **kwargs) -> torch.Tensor:
        L.seed_everything(seed, verbose=False)
        env = GaussianGroups(seed=seed, **SPURIOUS)
        model = method(n_classes=2, input_shape=env.input_shape, width=64, depth=2, lr=1e-3, probe=False, **kwargs)
        L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, limit_val_batches=0).fit(model, env)
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model.eval()(env.train_data.x), env.train_data.y,
                                                     reduction="none")

    for seed in SEEDS:
        erm, dro = training_losses(ERM, seed), training_losses(CVaRDRO, seed, alpha=0.1)
        assert cvar(dro, 0.1) <= cvar(erm, 0.1) - 0.03
        assert dro.mean() >= erm.mean() + 0.2
