"""A user's own environment, written with the public API only, trains through `testbed fit --data=module.Class`.

`NoisyFeatures` is the first example of docs/plugging-in.md (and the README's), executed from the page's text.
"""

import pytest
import torch
from conftest import QUIET, results, run_cli
from docs_blocks import define

from testbed.envs import Batch, EnvSpec, Split

NoisyFeatures = define("docs/plugging-in.md", "NoisyFeatures", globals())


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
