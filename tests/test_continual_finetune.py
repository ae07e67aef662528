"""ContinualFinetune: the same ERM objective through a schedule of shifts, scored after every phase."""

import csv

import pytest
from conftest import CONFIGS, QUIET, cli_error, results, run_cli

CONFOUNDED = str(CONFIGS / "envs" / "confounded.yaml")
CONTINUAL = str(CONFIGS / "baselines" / "continual_finetune.yaml")
SMALL = [*QUIET, "--data.image_size=14", "--data.n_train=2000", "--data.n_val=500", "--data.n_test=500",
         "--model.eval_every=4"]


def test_each_phase_learns_its_spurious_correlation_and_fails_the_held_out_future_shift(workdir):
    """Colour agrees 0.9 / 0.8, then reverses to 0.1, then the background colour agrees 0.9 / 0.8 instead;
    the held-out future shift reverses the background. Label noise 0.25 keeps the shape less predictive."""
    run_cli("fit", "-c", CONFOUNDED, "-c", CONTINUAL, *SMALL)
    run = workdir / "runs/lightning_logs/version_0"
    phases = results(run)["phases"]
    assert [p["phase"] for p in phases] == [0, 1, 2]
    assert [p["samples"] for p in phases] == [4000, 8000, 12000]
    for k, p in enumerate(phases):
        own = p["metrics"][f"p{k}"]
        assert own["acc"] >= 0.8 and own["spurious_reliance"] >= 0.8, k  # good inside each phase, by the attribute
        assert p["drop"] >= 0.5, k  # and fails at the next shift
        assert p["curve"][0][0] == 0 and p["curve"][-1] == [4000, own["acc"]]
    assert phases[0]["samples_to_recover"] is None
    assert all(0 < p["samples_to_recover"] <= 4000 for p in phases[1:])
    final = phases[-1]["metrics"]
    assert final["p2"]["spurious_reliance"] >= 0.8  # relies on the new attribute, the background
    assert final["f0"]["acc"] <= 0.3  # and fails when its correlation reverses
    logged = next(csv.reader(open(run / "metrics.csv")))
    assert {"phase2/f0/acc", "phase2/p2/spurious_reliance", "phase1/drop", "phase1/samples_to_recover"} <= set(logged)


@pytest.mark.parametrize("args,message", [
    (["--model.phases=[{}, {bogus: 1}]"], "model.phases[1]: SpuriousShapes has no knob 'bogus' to vary"),
    (["--model.future=[{label_noise: 2}]"], "model.future[0]: label_noise: 2 is outside the allowed range [0, 1]"),
])
def test_a_bad_phase_gives_one_line_and_writes_nothing(workdir, capsys, args, message):
    err = cli_error(capsys, "fit", "-c", CONFOUNDED, "-c", CONTINUAL, *args)
    assert len(err) == 1 and err[0].startswith(f"testbed: error: {message}"), err
    assert list(workdir.iterdir()) == []


def test_epochs_must_split_evenly_over_the_phases(workdir, capsys):
    err = cli_error(capsys, "fit", "-c", CONFOUNDED, "-c", CONTINUAL, *SMALL, "--trainer.max_epochs=4")
    assert err[-1] == "testbed: error: trainer.max_epochs: 4 does not split evenly over ContinualFinetune's 3 phases"
