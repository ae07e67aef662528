"""One definition of a condition: runs that differ in anything but the baseline, the scales, the seed and the draw
are never pooled, by the verdicts, the figures or the selection (synthetic sweeps read by the real commands)."""

import pandas as pd
import pytest
from conftest import run_cli
from fake_runs import aggregate_metrics, write_manifest, write_run

from testbed.analysis import fits
from testbed.analysis.select import selected_runs

WIDTHS = {16: 1e4, 64: 1e5, 256: 1e6}


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(fits, "BOOTSTRAP", 200)
    monkeypatch.setattr("testbed.analysis.plots.plot_sweep", lambda sweep_dir, runs: [])


def write_sweep(root, conditions: dict[str, dict], closes: dict[str, bool], stage: dict[str, str] | None = None,
                baseline: str = "ERM") -> None:
    """ERM and the Oracle at three widths x three seeds in each condition (its extra axes); ERM's shifted accuracy
    rises to the Oracle's with width where `closes` says so, and stays at 0.3 where not. With `stage` (a sweep stage
    per condition), the Oracle is written once."""
    for name, axes in conditions.items():
        for i, (width, params) in enumerate(WIDTHS.items()):
            for seed in range(3):
                ood = 0.3 + 0.2 * i if closes[name] else 0.3
                reliance = 0.9 - 0.4 * i if closes[name] else 0.9
                runs = ((baseline, aggregate_metrics(0.85 - 0.05 * i * closes[name], ood, ood - 0.05, reliance)),
                        ("Oracle", aggregate_metrics(0.75, 0.74, 0.72, 0.02)))
                for base, metrics in runs[:1] if stage and name != next(iter(conditions)) else runs:
                    write_run(root, f"{base}-{name}-{width}-{seed}", baseline=base, seed=seed, width=width,
                              params=params, metrics=metrics, axes=axes, converged=True, ceiling=0.75,
                              stage=(stage or {}).get(name, "") if base != "Oracle" else "")
    write_manifest(root)


def test_a_swept_label_noise_is_two_conditions_with_a_fit_each_not_one_trend_through_both(tmp_path):
    write_sweep(tmp_path / "s", {"clean": {"data.label_noise": 0.0}, "noisy": {"data.label_noise": 0.25}},
                closes={"clean": True, "noisy": False})
    run_cli("report", str(tmp_path / "s"))
    table = pd.read_csv(tmp_path / "s/fits.csv")
    erm = table[(table.baseline == "ERM") & (table.axis == "params") & (table.metric == "spurious_reliance")]
    slopes = dict(zip(erm.regime, erm.slope))
    # One fit per condition, each through its own three points: -0.4 per decade where reliance falls, 0 where flat
    # (a fit through both would give -0.2).
    assert slopes.keys() == {"confounded, data.label_noise=0.0", "confounded, data.label_noise=0.25"}
    assert slopes["confounded, data.label_noise=0.0"] == pytest.approx(-0.4, abs=1e-6)
    assert slopes["confounded, data.label_noise=0.25"] == pytest.approx(0.0, abs=1e-6)


def test_training_correlations_with_one_mean_are_two_conditions(tmp_path):
    write_sweep(tmp_path / "s", {"a": {"data.train_corrs": [0.9, 0.8]}, "b": {"data.train_corrs": [0.95, 0.75]}},
                closes={"a": True, "b": False})
    runs = selected_runs(tmp_path / "s", save=False).runs
    assert sorted(runs["regime"].unique()) == ["confounded, data.train_corrs=[0.9, 0.8]",
                                              "confounded, data.train_corrs=[0.95, 0.75]"]
    assert (runs.groupby(["regime", "baseline", "params"])["seed"].nunique() == 3).all()


def test_two_stages_of_one_baseline_are_two_methods_not_six_seeds(tmp_path):
    write_sweep(tmp_path / "s", {"short": {}, "long": {}}, closes={"short": False, "long": True},
                stage={"short": "short", "long": "long"})
    selected = selected_runs(tmp_path / "s", save=False)
    seeds = selected.runs.groupby(["baseline", "params"])["seed"].nunique()
    assert set(selected.runs["baseline"]) == {"ERM (stage long)", "ERM (stage short)", "Oracle"}
    assert (seeds == 3).all() and len(seeds) == 9
