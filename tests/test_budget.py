"""Training budgets (until a plateau, in samples) and the convergence record of every run."""

from conftest import CONFIGS, QUIET, results, run_cli

FIT = ["fit", "-c", str(CONFIGS / "envs/confounded.yaml"), "-c", str(CONFIGS / "baselines/erm.yaml"), *QUIET,
       "--data.image_size=8", "--data.n_train=512", "--data.n_val=100", "--data.n_test=100", "--data.batch_size=64",
       "--model.width=16", "--trainer.limit_val_batches=0", "--trainer.enable_checkpointing=false"]


def test_plateau_stops_when_the_training_loss_stops_improving_and_records_it(workdir):
    run_cli(*FIT, "--trainer.max_epochs=60", "--trainer.callbacks+=testbed.training.budget.Plateau",
            "--trainer.callbacks.min_delta=0.02", "--trainer.callbacks.patience=2")
    run = results(workdir / "runs/lightning_logs/version_0")
    record = run["convergence"]
    assert record["converged"] and run["epochs"] < 60
    assert record["criterion"].startswith("train/loss improved by less than 0.02 in each of the last 2 epochs")
    assert 0.6 < record["train_acc"] <= 1 and record["train_loss"] > 0
    assert run["ceiling"] == 0.75 and "val/acc_id" in run["metrics"]


def test_a_sample_budget_sets_the_steps_and_a_short_run_is_not_converged(workdir):
    run_cli(*FIT, "--trainer.callbacks+=testbed.training.budget.SampleBudget", "--trainer.callbacks.samples=640")
    run = results(workdir / "runs/lightning_logs/version_0")
    assert run["steps"] == 10 and run["train_samples"] == 640
    assert run["convergence"]["converged"] is False  # 2 epochs cannot show 3 without improvement


def test_epochs_before_min_steps_do_not_count_toward_the_plateau(workdir):
    # min_delta 1.0: no epoch counts as an improvement, so the plateau holds `patience` epochs after counting starts.
    # 8 steps per epoch; counting starts with the epoch that reaches step 40, so the run stops at 40 + 2 * 8 steps
    # (Lightning alone would stop at step 40, on a decision taken after the second epoch).
    run_cli(*FIT, "--trainer.max_epochs=60", "--trainer.min_steps=40",
            "--trainer.callbacks+=testbed.training.budget.Plateau",
            "--trainer.callbacks.min_delta=1.0", "--trainer.callbacks.patience=2")
    run = results(workdir / "runs/lightning_logs/version_0")
    assert run["steps"] == 56 and run["convergence"]["converged"] is True


def test_a_relative_plateau_keeps_a_loss_that_halves_every_epoch_training_where_the_absolute_one_stops():
    from testbed.training.budget import Plateau, plateaued
    from testbed.training.compat import early_stopping_decision

    halving = [0.08 / 2 ** k for k in range(10)]  # small losses: falls of 0.005 and less, each half the loss
    assert plateaued(halving, 0.01, 3) and not plateaued(halving, 0.01, 3, relative=True)
    assert plateaued([1.0, 0.995, 0.993, 0.991], 0.01, 3, relative=True)  # within 1% of the best, 3 epochs
    relative = Plateau(min_delta=0.01, patience=3, relative=True)  # the callback decides as the replay does
    assert [early_stopping_decision(relative, relative.monitored(x)) for x in halving[:5]] == [False] * 5


def test_a_relative_plateau_stops_a_run_and_says_so(workdir):
    run_cli(*FIT, "--trainer.max_epochs=60", "--trainer.callbacks+=testbed.training.budget.Plateau",
            "--trainer.callbacks.min_delta=0.05", "--trainer.callbacks.patience=2",
            "--trainer.callbacks.relative=true")
    run = results(workdir / "runs/lightning_logs/version_0")
    assert run["convergence"]["converged"] and run["epochs"] < 60
    assert run["convergence"]["criterion"].startswith(
        "train/loss improved by less than 0.05 of its best so far in each of the last 2 epochs")
