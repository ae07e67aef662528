"""The `testbed` command end to end, as a user types it."""

import subprocess
import sys

import pytest
from conftest import CONFIGS, QUIET, assert_same_metrics, cli_error, results, run_cli

CONFOUNDED = str(CONFIGS / "envs" / "confounded.yaml")
ERM = str(CONFIGS / "baselines" / "erm.yaml")
ORACLE = str(CONFIGS / "baselines" / "oracle.yaml")
SMALL = [*QUIET, "--data.n_train=1000", "--data.n_val=200", "--data.n_test=200", "--trainer.max_epochs=2"]


def test_erm_learns_the_colour_and_the_oracle_learns_the_shape(workdir):
    """Confounded regime (label noise 0.25, corr 0.9/0.8): ERM's optimum is the colour; the Oracle,
    trained on do(a ~ U) data, reaches the invariant ceiling of 0.75 on the reversed environment."""
    for model in (ERM, ORACLE):
        run_cli("fit", "-c", CONFOUNDED, "-c", model, *QUIET, "--trainer.max_epochs=5", "--model.probe=false")
    erm = results(workdir / "runs/lightning_logs/version_0")
    oracle = results(workdir / "runs/lightning_logs/version_1")
    m, o = erm["metrics"], oracle["metrics"]
    assert (erm["model"], oracle["model"]) == ("ERM", "Oracle")
    assert m["test/acc_train"] >= 0.8
    assert m["test/ood:corr=0.10/acc"] <= 0.3
    assert m["test/spurious_reliance"] >= 0.8
    assert o["test/ood:corr=0.10/acc"] >= 0.65
    assert o["test/spurious_reliance"] <= 0.2
    assert o["test/causal_sensitivity"] > m["test/causal_sensitivity"]
    assert m["test/ood_gap"] > 0.4 > abs(o["test/ood_gap"])
    assert erm["params"] > 0 and erm["train_flops"] == erm["flops_per_sample"] * erm["train_samples"]
    assert erm["train_samples"] == 5 * erm["n_train"] == 50000
    assert erm["wall_time_s"] > 0 and erm["versions"]["torch"]
    assert (erm["n_classes"], erm["n_attr"]) == (2, 2)  # the group -> label map that tells a constant predictor


def test_same_config_and_seed_give_identical_metrics(workdir):
    for _ in range(2):
        run_cli("fit", "-c", CONFOUNDED, "-c", ERM, *SMALL)
    first, second = (results(workdir / f"runs/lightning_logs/version_{i}") for i in (0, 1))
    # Exactly, float sums too: one code path run twice in one process with the same threads sums in the same order,
    # so any difference is a seed that does not reach some random draw.
    assert first["metrics"] == second["metrics"]


def test_print_config_is_accepted_back_by_fit(workdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli("fit", "-c", CONFOUNDED, "-c", ORACLE, *SMALL, "--model.width=32", "--print_config")
    assert exit_.value.code in (0, None)
    (workdir / "printed.yaml").write_text(capsys.readouterr().out)
    run_cli("fit", "-c", "printed.yaml")
    run = results(workdir / "runs/lightning_logs/version_0")
    assert run["model"] == "Oracle" and run["n_train"] == 1000 and run["epochs"] == 2
    assert "width: 32" in (workdir / "runs/lightning_logs/version_0/config.yaml").read_text()


def test_test_command_reproduces_the_metrics_of_fit_from_the_checkpoint(workdir):
    run_cli("fit", "-c", CONFOUNDED, "-c", ERM, *SMALL)
    fitted = workdir / "runs/lightning_logs/version_0"
    (ckpt,) = (fitted / "checkpoints").glob("*.ckpt")
    run_cli("test", "-c", str(fitted / "config.yaml"), "--ckpt_path", str(ckpt))
    tested = results(workdir / "runs/lightning_logs/version_1")
    assert_same_metrics(tested["metrics"], results(fitted)["metrics"])
    # The scale of the model tested is the trained one's (it was 0 steps, epochs, samples and FLOPs).
    scale = ("steps", "epochs", "train_samples", "train_flops")
    assert [tested[k] for k in scale] == [results(fitted)[k] for k in scale]
    assert tested["epochs"] == 2 and tested["train_samples"] == 2000


def test_group_dro_weights_are_checkpointed_and_restored(workdir):
    import torch

    from testbed.baselines import GroupDRO

    run_cli("fit", "-c", CONFOUNDED, "-c", str(CONFIGS / "baselines" / "group_dro.yaml"), *SMALL,
            "--trainer.limit_test_batches=1", "--model.probe=false")
    (ckpt,) = (workdir / "runs/lightning_logs/version_0/checkpoints").glob("*.ckpt")
    q = torch.load(ckpt, weights_only=True)["state_dict"]["q"]
    assert q.shape == (4,) and abs(float(q.sum()) - 1) < 1e-5 and float(q.max() - q.min()) > 1e-3  # moved off uniform
    assert torch.equal(GroupDRO.load_from_checkpoint(ckpt).q, q)


BAD_INPUTS = [
    (["--data.train_corrs=[1.5,0.8]"], "data.train_corrs: 1.5 is outside the allowed range [0, 1]"),
    (["--data.n_train=-5"], "data.n_train: -5 is not allowed; it must be a positive number"),
    (["--model.width=0"], "model.width: 0 is not allowed"),
    (["--model=Foo"], "model: unknown baseline 'Foo'; choose one of BSoftmax, CBLoss, CORAL, CRT, CVaRDRO, "
                     "ContinualFinetune, DAgger, DFR, ERM, Focal, GroupDRO, IRM, JTT, LDAM, LISA, LfF, MMD, Mixup, "
                     "Online, Oracle, ReSample, ReWeight, ReWeightCRT, SqrtReWeight, VREx or give an import path"),
    (["--data=Nope"], "data: unknown environment 'Nope'; choose one of Braking, CelebA, CivilComments, ColoredMNIST, "
                    "GaussianGroups, SpuriousShapes, SpuriousText, Waterbirds, WildsEnv or give"),
    (["--model.arch=gpt"], "model.arch: 'gpt' is not allowed; choose one of mlp, cnn, resnet"),
    (["--data.bogus=1"], "data.bogus: unknown option"),
    (["-c", "missing.yaml"], "config: 'missing.yaml' does not exist"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[m.split(":")[0] for _, m in BAD_INPUTS])
def test_bad_input_gives_one_line_and_status_2_and_writes_nothing(workdir, capsys, args, message):
    err = cli_error(capsys, "fit", "-c", CONFOUNDED, "-c", ERM, *args)
    assert len(err) == 1 and err[0].startswith(f"testbed: error: {message}"), err
    assert list(workdir.iterdir()) == []


def test_the_installed_command_fails_cleanly_without_a_traceback(workdir):
    proc = subprocess.run([sys.executable, "-m", "testbed", "fit", "-c", CONFOUNDED, "-c", ERM,
                           "--data.label_noise=2"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "testbed: error: data.label_noise: 2.0 is outside the allowed range [0, 1]"
    assert list(workdir.iterdir()) == []
