"""A user's own environment, written with the public API only, trains through `testbed fit --data=module.Class`.

The class below is the README's example, verbatim; the README is checked to contain it.
"""

import inspect

import torch
from conftest import QUIET, ROOT, results, run_cli

from testbed.envs import Batch, EnvSpec, ShiftedEnv


class NoisyFeatures(ShiftedEnv):
    """Two numbers per sample: the label with noise (causal) and the attribute `a`, nearly clean (spurious)."""

    n_classes, input_shape = 2, (2,)

    def __init__(self, train_corr: float = 0.95, n: int = 2000, seed: int = 0) -> None:
        super().__init__(batch_size=100, seed=seed)
        self.specs = [EnvSpec("train", train_corr), EnvSpec("id", train_corr), EnvSpec("ood", 0.1)]
        self.n = n

    def make(self, spec: EnvSpec, index: int) -> Batch:
        g = torch.Generator().manual_seed(self.seed * 1000 + index)
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
