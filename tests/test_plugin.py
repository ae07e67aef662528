"""A user's own environment, written with the public API only, trains through `testbed fit --data=module.Class`.

The class below is the README's example, verbatim; the README is checked to contain it.
"""

import inspect

import pytest
import torch
from conftest import QUIET, ROOT, results, run_cli

from testbed.envs import Batch, EnvSpec, ShiftedEnv, Split


class NoisyFeatures(ShiftedEnv):
    """Two numbers per sample: the label with noise (causal) and the attribute `a`, nearly clean (spurious)."""

    n_classes, input_shape = 2, (2,)

    def __init__(self, train_corr: float = 0.95, n: int = 2000, seed: int = 0) -> None:
        super().__init__(batch_size=100, seed=seed)
        self.specs = [EnvSpec("train", train_corr), EnvSpec("id", train_corr), EnvSpec("ood", 0.1)]
        self.n = n

    def make(self, spec: EnvSpec, index: int, split: Split) -> Batch:
        g = self.generator(spec, split)  # seeded by the seed, the sub-environment and the split
        y = torch.randint(2, (self.n,), generator=g)
        a = torch.where(torch.rand(self.n, generator=g) < spec.corr, y, 1 - y)
        x = torch.stack([y + torch.randn(self.n, generator=g), a + 0.1 * torch.randn(self.n, generator=g)], 1)
        return Batch(x, y, a, e=torch.full_like(y, index), z=torch.zeros(self.n, 0))


def test_the_readme_example_is_this_class():
    assert inspect.getsource(NoisyFeatures) in (ROOT / "README.md").read_text()


def test_a_plugin_environment_trains_through_the_cli(workdir):
    run_cli("fit", "--data=test_plugin.NoisyFeatures", "--data.train_corr=0.9", "--model=ERM", *QUIET,
            "--trainer.max_epochs=2")
    run = results(workdir / "runs/lightning_logs/version_0")
    m = run["metrics"]
    assert run["data"] == "NoisyFeatures" and run["n_train"] == 2000
    assert m["test/id:corr=0.90/acc"] > 0.85 > 0.5 > m["test/ood:corr=0.10/acc"]
    assert "test/spurious_reliance" not in m


class MarkedValidation(NoisyFeatures):
    """NoisyFeatures whose validation samples agree with the attribute: scored on the shifted environment's test
    samples (corr 0.1), a model that follows the attribute is wrong; on its validation samples, right.
    Every sample's id (its split and row) is in `z`."""

    def make(self, spec: EnvSpec, index: int, split: Split) -> Batch:
        batch = super().make(spec, index, split)
        if split == "val":  # the attribute agrees with the label, in the input too
            batch = batch._replace(x=batch.x + torch.stack([0 * batch.y, batch.y - batch.a], 1), a=batch.y)
        rows = torch.arange(self.n, dtype=torch.float) + 10 * self.n * ["train", "val", "test"].index(split)
        return batch._replace(z=rows[:, None])


def test_a_plugin_is_validated_on_its_own_validation_samples(workdir):
    env = MarkedValidation()
    env.setup()
    for name in env.names("id", "ood"):
        assert not set(env.val_data[name].z[:, 0].tolist()) & set(env.data[name].z[:, 0].tolist())
    run_cli("fit", "--data=test_plugin.MarkedValidation", "--model=ERM", *QUIET, "--trainer.max_epochs=2",
            "--trainer.limit_val_batches=0")
    m = results(workdir / "runs/lightning_logs/version_0")["metrics"]
    assert m["test/ood:corr=0.10/acc"] < 0.3 and m["val/ood:corr=0.10/acc"] > 0.85 and m["val/acc_id"] > 0.85


class WithoutSplits(NoisyFeatures):
    """A plug-in written before `make` took a split: it has no validation samples."""

    def make(self, spec: EnvSpec, index: int) -> Batch:
        return super().make(spec, index, "test")


def test_a_plugin_without_validation_samples_is_warned_and_never_validated_on_test_data(workdir):
    env = WithoutSplits()
    with pytest.warns(UserWarning, match="gives no validation samples apart from its test samples"):
        env.setup()
    assert env.val_data == {} and env.eval_names("val") == []
