"""The plug-in contract: a user's environment with both interventions and range checks, written with the public API
only (docs/plugging-in.md's second example, executed from the page's text), and the reproducible split of a fixed
dataset."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import QUIET, cli_error, results, run_cli
from docs_blocks import define
from torch import Tensor

from testbed.envs import Batch, EnvSpec, ShiftedEnv, Split
from testbed.envs.split import split, take
from testbed.errors import ConfigError

TwoCues = define("docs/plugging-in.md", "TwoCues", globals())


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


class NoMake(ShiftedEnv):
    n_classes, input_shape = 2, (2,)

    def __init__(self) -> None:
        super().__init__()
        self.specs = [EnvSpec("train", 0.9), EnvSpec("ood", 0.1)]


class NoSpecs(TwoCues):
    def __init__(self) -> None:
        ShiftedEnv.__init__(self)


class NoIntervene(TwoCues):
    intervene = ShiftedEnv.intervene


class WrongShape(TwoCues):
    input_shape = (3,)


class LabelOutOfRange(TwoCues):
    def make(self, spec: EnvSpec, index: int, split: Split) -> Batch:
        batch = super().make(spec, index, split)
        return batch._replace(y=batch.y + (spec.role == "ood"))


class ShapeOfIntervention(TwoCues):
    def intervene(self, batch: Batch, a: Tensor | None = None, causal: Tensor | None = None) -> Tensor:
        return super().intervene(batch, a, causal)[:, :1]


@pytest.mark.parametrize("plugin, line", [
    ("NoMake", "data: NoMake does not implement make(self, spec, index, split), which returns the Batch of one "
               "sub-environment"),
    ("NoSpecs", "data: NoSpecs does not set `specs`, its sub-environments, e.g. `self.specs = [EnvSpec('train', 0.9), "
                "EnvSpec('id', 0.9), EnvSpec('ood', 0.1)]` in `__init__`"),
    ("NoIntervene", "data: NoIntervene lists 'a' in `interventions`, but its intervene is not implemented; implement "
                    "it, or leave 'a' out (then the metrics that intervene on it are not computed)"),
    ("WrongShape", "data: WrongShape.make for 'train:corr=0.95' (train or test) returns inputs of shape (2,), but "
                   "input_shape is (3,)"),
    ("LabelOutOfRange", "data: LabelOutOfRange.make for 'ood:corr=0.10' (train or test): y has values in [1, 2], "
                        "outside the allowed range [0, 1]"),
    ("ShapeOfIntervention", "data: ShapeOfIntervention.intervene(a=...) returns (8, 1); it must return inputs of "
                            "the batch's shape (8, 2)"),
])
def test_a_plugin_that_breaks_the_contract_fails_with_one_line_before_anything_is_written(workdir, capsys, plugin,
                                                                                         line):
    err = cli_error(capsys, "fit", f"--data=test_plugin_contract.{plugin}", "--model=ERM", *QUIET)
    assert err == [f"testbed: error: {line}"]
    assert not (workdir / "runs").exists()


def test_a_module_that_is_not_importable_is_told_where_testbed_looks(workdir, capsys):
    err = cli_error(capsys, "fit", "--data=my_envs.TwoCues", "--model=ERM")
    assert err == ["testbed: error: data: no module named 'my_envs'; testbed imports plug-ins from the folder it runs "
                   "in and from PYTHONPATH: run it from the folder that holds my_envs.py (or the my_envs/ package), "
                   "or set PYTHONPATH to that folder"]


def test_the_testbed_script_imports_a_plugin_from_the_folder_it_runs_in(workdir):
    """The console script, unlike `python -m testbed`, does not put the working folder on `sys.path` itself."""
    (workdir / "my_envs.py").write_text("from testbed.envs import ShiftedEnv\n\nclass Empty(ShiftedEnv):\n    pass\n")
    script = Path(sys.executable).parent / "testbed"
    proc = subprocess.run([str(script), "fit", "--data=my_envs.Empty", "--model=ERM"], cwd=workdir,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("testbed: error: data: Empty does not set `n_classes`, the number of classes, "
                                   "e.g. `n_classes = 2`")
