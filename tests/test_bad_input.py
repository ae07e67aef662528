"""A corpus of mistyped commands, as a new user types them: each must exit with status 2 and one line on stderr
that names the field or file and what is allowed, and write nothing.

Every command runs through the real entry point (`testbed.cli.main.main`) in this process: a subprocess would spend
seconds importing for each case.
"""

import json
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, run_cli

ENV, ERM = str(CONFIGS / "envs" / "confounded.yaml"), str(CONFIGS / "baselines" / "erm.yaml")
# A valid fit apart from the mistake each case adds; small, in case a mistake were not caught.
FIT = ["-c", ENV, "-c", ERM, "--data.n_train=100", "--data.n_val=20", "--data.n_test=20", "--trainer.max_epochs=1",
       "--trainer.enable_progress_bar=false"]
SHOW = ["--data=SpuriousShapes", "--data.n_train=20", "--data.n_val=10", "--data.n_test=10"]

CASES = [
    # numbers: out of range, NaN, inf, strings, fractions for integers
    (["fit", *FIT, "--data.n_train=0"], "data.n_train: 0 is not allowed; it must be a positive number"),
    (["fit", *FIT, "--data.n_train=-5"], "data.n_train: -5 is not allowed"),
    (["fit", *FIT, "--data.n_train=abc"], "data.n_train: 'abc' is not allowed; give an integer"),
    (["fit", *FIT, "--data.n_train=1.5"], "data.n_train: '1.5' is not allowed; give an integer"),
    (["fit", *FIT, "--data.label_noise=nan"], "data.label_noise: 'nan' is not allowed; give a finite number"),
    (["fit", *FIT, "--data.label_noise=inf"], "data.label_noise: 'inf' is not allowed; give a finite number"),
    (["fit", *FIT, "--data.label_noise=1.5"], "data.label_noise: 1.5 is outside the allowed range [0, 1]"),
    (["fit", *FIT, "--data.train_corrs=[1.5,0.8]"], "data.train_corrs: 1.5 is outside the allowed range [0, 1]"),
    (["fit", *FIT, "--data.batch_size=0"], "data.batch_size: 0 is not allowed"),
    (["fit", *FIT, "--model.lr=0"], "model.lr: 0.0 is not allowed; it must be a positive number"),
    (["fit", *FIT, "--model.lr=-inf"], "model.lr: '-inf' is not allowed; give a finite number"),
    (["fit", *FIT, "--model.lr=fast"], "model.lr: 'fast' is not allowed; give a finite number"),
    (["fit", *FIT, "--model.weight_decay=-1"], "model.weight_decay: -1.0 is not allowed; it must be >= 0"),
    (["fit", *FIT, "--model.width=0"], "model.width: 0 is not allowed"),
    (["fit", *FIT, "--trainer.max_epochs=-5"], "trainer.max_epochs: `max_epochs` must be a non-negative integer"),
    (["fit", *FIT, "--trainer.max_epochs=ten"], "trainer.max_epochs: 'ten' is not allowed; give an integer"),
    # a regime's stages need whole epochs: refused before Lightning makes runs/lightning_logs/version_N
    (["fit", *FIT, "-c", str(CONFIGS / "baselines/continual_finetune.yaml"), "--trainer.max_epochs=5"],
     "trainer.max_epochs: 5 does not split evenly over ContinualFinetune's"),
    (["fit", *FIT, "-c", str(CONFIGS / "baselines/continual_finetune.yaml"), "--trainer.callbacks+=SampleBudget",
      "--trainer.callbacks.samples=500"],
     "trainer.max_epochs: ContinualFinetune splits its epochs over"),
    (["fit", *FIT, "-c", str(CONFIGS / "baselines/jtt.yaml"), "--trainer.callbacks+=SampleBudget",
      "--trainer.callbacks.samples=500"],
     "JTT trains id_epochs=2 epochs before its second stage, so it needs a number"),
    (["fit", *FIT, "-c", str(CONFIGS / "baselines/jtt.yaml"), "--trainer.max_epochs=2"],
     "trainer.max_epochs: 2 leaves no epoch for JTT's second stage after id_epochs=2"),
    # unknown names
    (["fit", *FIT, "--model=Foo"], "model: unknown baseline 'Foo'; choose one of"),
    (["fit", *FIT, "--data=Nope"], "data: unknown environment 'Nope'; choose one of"),
    (["fit", *FIT, "--model.arch=gpt"], "model.arch: 'gpt' is not allowed; choose one of mlp, cnn"),
    (["fit", *FIT, "--data.spurious_feature=sound"], "data.spurious_feature: 'sound' is not allowed; choose one of"),
    (["fit", *FIT, "--data.bogus=1"], "data.bogus: unknown option"),
    # Trainer settings Lightning refuses, and hardware that is absent
    (["fit", *FIT, "--trainer.accelerator=gpu"], "trainer.accelerator: "),
    (["fit", *FIT, "--trainer.accelerator=banana"], "trainer.accelerator: You selected an invalid accelerator"),
    (["fit", *FIT, "--trainer.devices=0"], "trainer.devices: "),
    (["fit", *FIT, "--trainer.strategy=nonsense"], "trainer.strategy: You selected an invalid strategy name"),
    (["fit", *FIT, "--trainer.precision=17"], "trainer.precision: '17' is not allowed; choose one of"),
    # config files: missing, empty, malformed, of the wrong type, a folder
    (["fit", "-c", "{d}/missing.yaml"], "missing.yaml"),
    (["fit", "-c", "{d}/empty.yaml"], "empty.yaml"),
    (["fit", "-c", "{d}/broken.yaml"], "broken.yaml"),
    (["fit", "-c", "{d}/list.yaml"], "list.yaml"),
    (["fit", "-c", "{d}/adir"], "adir"),
    # checkpoints: absent, a folder, not a checkpoint, cut short, without weights; `test` without one
    (["fit", *FIT, "--model.init_ckpt={d}/notckpt.ckpt"], "init_ckpt: '{d}/notckpt.ckpt' is not a checkpoint"),
    (["fit", *FIT, "--model.init_ckpt={d}/adir"], "init_ckpt: '{d}/adir' is a folder"),
    (["fit", *FIT, "--ckpt_path={d}/truncated.ckpt"], "ckpt_path: '{d}/truncated.ckpt' is not a checkpoint or is cut"),
    (["fit", *FIT, "--ckpt_path={d}/missing.ckpt"], "ckpt_path: '{d}/missing.ckpt' does not exist"),
    (["test", *FIT], "ckpt_path: required by test"),
    (["test", *FIT, "--ckpt_path={d}/missing.ckpt"], "ckpt_path: '{d}/missing.ckpt' does not exist"),
    (["test", *FIT, "--ckpt_path={d}/nostate.ckpt"], "ckpt_path: '{d}/nostate.ckpt' is not a Lightning checkpoint"),
    (["validate", *FIT, "--ckpt_path={d}/adir"], "ckpt_path: '{d}/adir' is a folder"),
    (["validate", *FIT, "--ckpt_path={d}/notckpt.ckpt"], "ckpt_path: '{d}/notckpt.ckpt' is not a checkpoint"),
    # a file where the run folder must go
    (["fit", *FIT, "--trainer.logger.init_args.save_dir={d}/afile"], "{d}/afile is a file, not a folder"),
    # sweep
    (["sweep"], "the following arguments are required: -c/--config"),
    (["sweep", "-c", "{d}/missing.yaml"], "config: sweep file '{d}/missing.yaml' does not exist"),
    (["sweep", "-c", "{d}/adir"], "config: sweep file '{d}/adir' is a folder"),
    (["sweep", "-c", "{d}/broken.yaml"], "config: {d}/broken.yaml is not valid YAML"),
    (["sweep", "-c", "{d}/list.yaml"], "config: {d}/list.yaml must be a mapping"),
    (["sweep", "-c", "{d}/sweep.yaml", "--workers", "0"], "workers: 0 is not allowed"),
    (["sweep", "-c", "{d}/sweep.yaml", "--workers", "two"], "argument --workers: invalid int value: 'two'"),
    (["sweep", "-c", "{d}/sweep.yaml", "--executor", "dask"], "argument --executor: invalid choice: 'dask'"),
    (["sweep", "-c", "{d}/sweep.yaml", "--out", "{d}/afile"], "out: '{d}/afile' is a file"),
    (["sweep", "-c", "{d}/sweep_gpu.yaml"], "trainer.accelerator: "),  # checked before any run folder is made
    (["sweep", "-c", "{d}/sweep_precision.yaml"], "trainer.precision: "),
    # collect, plot, report
    (["collect"], "the following arguments are required: sweep_dir"),
    (["collect", "{d}/missing"], "sweep_dir: '{d}/missing' is not a folder"),
    (["plot", "{d}/afile"], "sweep_dir: '{d}/afile' is not a folder"),
    (["report", "{d}/adir"], "sweep_dir: no readable finished runs in {d}/adir"),
    (["collect", "{d}/corrupt"], "skipped {d}/corrupt/run0: results.json or run.json unreadable"),
    (["plot", "{d}/corrupt", "--select", "best"], "argument --select: invalid choice: 'best'"),
    (["report", "{d}/corrupt", "--bogus"], "unrecognized arguments: --bogus"),
    # show
    (["show", *SHOW, "--n", "0"], "n: 0 is not allowed"),
    (["show", *SHOW, "--out", "{d}/samples.jpg"], "out: '{d}/samples.jpg' is not allowed; give a .png file"),
    (["show", *SHOW, "--data.n_train=-1"], "data.n_train: -1 is not allowed"),
    (["show", *SHOW, "--ckpt", "{d}/notckpt.ckpt"], "ckpt: '{d}/notckpt.ckpt' is not a checkpoint"),
    # no such command
    (["frobnicate"], "command: 'frobnicate' is not allowed; choose one of fit, validate, test, sweep"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Wrong inputs of every kind, made once."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "empty.yaml").write_text("")
    (d / "broken.yaml").write_text("model:\n  class_path: ERM\n   init_args: [\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "adir").mkdir()
    (d / "afile").write_text("not a folder\n")
    (d / "notckpt.ckpt").write_text("hello\n")
    torch.save({"epoch": 1}, d / "nostate.ckpt")
    torch.save({"state_dict": {"net.0.weight": torch.zeros(64, 64)}}, d / "whole.ckpt")
    whole = (d / "whole.ckpt").read_bytes()
    (d / "truncated.ckpt").write_bytes(whole[: len(whole) // 2])
    (d / "sweep.yaml").write_text(json.dumps({"name": "s", "configs": [ENV], "args": {"model": "ERM"}}))
    for name, trainer in [("gpu", {"trainer.accelerator": "gpu"}), ("precision", {"trainer.precision": "banana"})]:
        (d / f"sweep_{name}.yaml").write_text(json.dumps({"name": "s", "configs": [ENV],
                                                          "args": {"model": "ERM", **trainer}}))
    run = d / "corrupt" / "run0"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"sweep": "s", "axes": {}, "seed": 0}))
    (run / "results.json").write_text('{"model": "ERM", "metrics": {')  # cut short
    (run / "done").write_text("")
    return d


@pytest.mark.parametrize("argv,message", CASES, ids=[" ".join(a[:1] + a[-1:])[:60] for a, _ in CASES])
def test_a_mistyped_command_exits_2_with_one_line_and_writes_nothing(files, workdir, capsys, argv, message):
    before = sorted(files.rglob("*"))
    with pytest.raises(SystemExit) as exit_:
        run_cli(*(a.replace("{d}", str(files)) for a in argv))
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert exit_.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("testbed: error: "), err
    assert captured.out == "", captured.out  # the one line is all it prints
    assert message.replace("{d}", str(files)) in err[0]
    assert not any(workdir.iterdir()), sorted(workdir.rglob("*"))  # nothing written where the command ran
    assert sorted(files.rglob("*")) == before  # nor next to the inputs


def test_the_corpus_covers_every_command():
    assert {argv[0] for argv, _ in CASES} >= {"fit", "validate", "test", "sweep", "collect", "plot", "report", "show"}
    assert len(CASES) >= 40
