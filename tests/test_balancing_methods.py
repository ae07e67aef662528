"""The reference methods for spurious correlations: SUBG (ReSample by group) and JTT against ERM in the confounded
regime; group-label refusal; every new baseline in one sweep, with packing cleanly refused."""

import json

import pytest
from conftest import CONFIGS, QUIET, cli_error, results, run_cli

from testbed.baselines import ReSample, ReWeight
from testbed.envs import GaussianGroups
from testbed.sweep import expand, load_sweep
from testbed.sweep.job import packs
from testbed.sweep.resolve import identify

CONFOUNDED = str(CONFIGS / "envs" / "confounded.yaml")
NEW = ["JTT", "LfF", "ReSample", "ReWeight", "Mixup", "CORAL", "MMD"]


@pytest.mark.slow
def test_subg_and_jtt_beat_erm_on_the_reversed_environment(workdir):
    # The settings of test_reference_methods.py with half the training data. Measured over seeds 0, 1, 2 (see
    # README): SUBG's reversed accuracy exceeds ERM's by 0.39 to 0.46 and its reliance is lower by 0.54 to 0.57;
    # JTT's by 0.20 to 0.26 and 0.34 to 0.39.
    fast = [*QUIET, "--data.image_size=14", "--data.n_train=5000", "--data.n_val=1000", "--data.n_test=1000",
            "--trainer.max_epochs=10", "--model.probe=false"]  # the model's head is judged: no probe (test_probe.py)
    names = ["erm", "resample", "jtt"]
    for name in names:
        run_cli("fit", "-c", CONFOUNDED, "-c", str(CONFIGS / "baselines" / f"{name}.yaml"), *fast)
    runs = {n: results(workdir / f"runs/lightning_logs/version_{i}") for i, n in enumerate(names)}
    rev = {n: r["metrics"]["test/ood:corr=0.10/acc"] for n, r in runs.items()}
    reliance = {n: r["metrics"]["test/spurious_reliance"] for n, r in runs.items()}
    assert rev["erm"] <= 0.3 and reliance["erm"] >= 0.7
    assert rev["resample"] >= rev["erm"] + 0.3 and reliance["resample"] <= reliance["erm"] - 0.3
    assert rev["jtt"] >= rev["erm"] + 0.15 and reliance["jtt"] <= reliance["erm"] - 0.25
    kept = runs["resample"]["resample"]["kept"]  # 4 groups of the smallest size: 15% of 5000 disagree, so ~4 x 375
    assert kept % 4 == 0 and 1200 < kept < 1800
    assert 0 < runs["jtt"]["jtt"]["error_set"] < 5000 / 2


class NoAttribute(GaussianGroups):
    """An environment whose samples carry no spurious-attribute label."""

    n_attr = 1


@pytest.mark.parametrize("method", [ReSample, ReWeight])
def test_group_methods_refuse_an_environment_without_group_labels(method):
    from testbed.errors import ConfigError

    model = method(by="group", input_shape=(200,))
    with pytest.raises(ConfigError, match=f"model: {method.__name__}\\(by=group\\) needs group labels"):
        model.check_env(NoAttribute())
    method(by="class", input_shape=(200,)).check_env(NoAttribute())  # balancing classes needs no groups


def test_bad_balancing_key_is_one_line(workdir, capsys):
    err = cli_error(capsys, "fit", "-c", CONFOUNDED, "-c", str(CONFIGS / "baselines" / "resample.yaml"),
                    "--model.by=colour")
    assert len(err) == 1 and "by" in err[0] and not (workdir / "runs").exists()


@pytest.mark.slow
def test_every_new_baseline_trains_in_a_sweep_and_only_reweight_of_them_packs(workdir, capsys):
    tiny = {"data.image_size": 8, "data.n_train": 256, "data.n_val": 64, "data.n_test": 64, "trainer.max_epochs": 3,
            "model.width": 16, "trainer.limit_val_batches": 0, "trainer.enable_checkpointing": False,
            "trainer.enable_progress_bar": False}
    sweep = {"name": "new", "configs": [CONFOUNDED], "args": tiny, "axes": {"model": ["ERM", *NEW]}, "seeds": [0, 1]}
    path = workdir / "new.yaml"
    path.write_text(json.dumps(sweep))
    runs = expand(load_sweep(path))
    identify(runs)
    assert sorted(len(job) for job in packs(runs)) == [1] * 12 + [2, 2]  # ERM's and ReWeight's seeds pack
    path.write_text(json.dumps({**sweep, "axes": {"model": NEW}, "seeds": [0]}))
    run_cli("sweep", "-c", str(path), "--out", "runs")
    assert "0 runs train in 0 packed models; 7 one by one" in capsys.readouterr().out  # one seed: none to pack
    done = [json.loads((d / "results.json").read_text()) for d in (workdir / "runs/new").iterdir()
            if (d / "done").exists()]
    assert sorted(r["model"] for r in done) == sorted(NEW)
