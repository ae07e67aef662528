"""The plug-in contract: a user's environment with both interventions and range checks, written with the public API
only (the README's second example, verbatim), and the reproducible split of a fixed dataset."""

import inspect

import pytest
import torch
from conftest import QUIET, ROOT, cli_error, results, run_cli
from torch import Tensor

from testbed.envs import Batch, EnvSpec, ShiftedEnv
from testbed.envs.split import split, take
from testbed.errors import ConfigError, check_positive, check_unit


class TwoCues(ShiftedEnv):
    """Two numbers per sample: a noisy reading of the class `s` (causal) and the attribute `a`, nearly clean
    (spurious). `z` keeps what rendering needs (the class and the two noise draws), so both can be intervened on."""

    n_classes, input_shape = 2, (2,)
    interventions = ("a", "causal")

    def __init__(self, train_corr: float = 0.95, label_noise: float = 0.0, n: int = 2000, seed: int = 0) -> None:
        super().__init__(batch_size=100, seed=seed)
        check_unit("train_corr", train_corr)
        check_unit("label_noise", label_noise)
        check_positive("n", n)
        self.specs = [EnvSpec("train", train_corr), EnvSpec("id", train_corr), EnvSpec("ood", 0.1)]
        self.label_noise, self.n = label_noise, n

    def make(self, spec: EnvSpec, index: int) -> Batch:
        g = torch.Generator().manual_seed(self.seed * 1000 + index)
        s = torch.randint(2, (self.n,), generator=g)  # the causal class
        y = torch.where(torch.rand(self.n, generator=g) < self.label_noise, 1 - s, s)
        a = torch.where(torch.rand(self.n, generator=g) < spec.corr, y, 1 - y)
        z = torch.cat([s[:, None].float(), torch.randn(self.n, 2, generator=g)], 1)
        return Batch(self.render(z, a), y, a, e=torch.full_like(y, index), z=z)

    def render(self, z: Tensor, a: Tensor) -> Tensor:
        return torch.stack([z[:, 0] + 0.5 * z[:, 1], a + 0.1 * z[:, 2]], 1)

    def causal(self, batch: Batch) -> Tensor:
        return batch.z[:, 0].long()

    def intervene(self, batch: Batch, a: Tensor | None = None, causal: Tensor | None = None) -> Tensor:
        z = batch.z.clone()
        if causal is not None:
            z[:, 0] = causal.to(z.dtype)
        return self.render(z, batch.a if a is None else a)


def test_the_readme_example_is_this_class():
    assert inspect.getsource(TwoCues) in (ROOT / "README.md").read_text()


def test_a_plugin_option_out_of_range_fails_with_one_line_and_status_2(workdir, capsys):
    err = cli_error(capsys, "fit", "--data=test_plugin_contract.TwoCues", "--data.label_noise=2", "--model=ERM")
    assert err == ["testbed: error: data.label_noise: 2.0 is outside the allowed range [0, 1]"]
    assert not (workdir / "runs").exists()


def test_both_interventions_give_the_counterfactual_metrics_and_train_the_oracle(workdir):
    """With label noise 0.25, ERM follows the nearly clean attribute; the Oracle, trained on do(a ~ U) through
    `intervene`, reads the class (its ceiling: about 0.67 here)."""
    for model in ("ERM", "Oracle"):
        run_cli("fit", "--data=test_plugin_contract.TwoCues", "--data.label_noise=0.25", f"--model={model}",
                "--model.width=16", *QUIET, "--trainer.max_epochs=10")
    erm, oracle = (results(workdir / f"runs/lightning_logs/version_{i}")["metrics"] for i in (0, 1))
    assert erm["test/spurious_reliance"] > 0.8 > 0.2 > oracle["test/spurious_reliance"]
    assert oracle["test/causal_sensitivity"] > 0.5 > 0.2 > erm["test/causal_sensitivity"]
    assert oracle["test/ood:corr=0.10/acc"] > 0.6 > 0.3 > erm["test/ood:corr=0.10/acc"]


def test_split_is_reproducible_disjoint_and_extends_the_training_part():
    train, val, test = split(100, [10, 20], seed=3)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert len(set(torch.cat([train, val, test]).tolist())) == 100
    small, val2, test2 = split(100, [10, 20], n_train=30, seed=3)
    assert torch.equal(small, train[:30]) and torch.equal(val, val2) and torch.equal(test, test2)
    assert not torch.equal(split(100, [10, 20], seed=4)[1], val)
    data = Batch(*(torch.arange(100) for _ in range(5)))
    assert torch.equal(take(data, val).y, val)
    with pytest.raises(ConfigError, match="n_train: 80 is not allowed; 100 samples less 30 held out leave 70"):
        split(100, [10, 20], n_train=80)
