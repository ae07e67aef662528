"""Trend fits recover known slopes; the verdicts follow the stated criterion; figures come from real runs."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import CONFIGS, run_cli

from testbed.report import TOL, fit_trend, trends

SCALES = np.repeat([1e4, 1e5, 1e6, 1e7], 3)  # four decades, three seeds each


def synthetic(slope: float, noise: float, intercept: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return intercept + slope * (np.log10(SCALES) - 4) + rng.normal(0, noise, len(SCALES))


@pytest.mark.parametrize("slope,noise,verdict", [
    (-0.1, 0.01, "closes"),
    (0.0, 0.01, "does not close"),
    (0.05, 0.01, "does not close"),
    (-TOL, 0.1, "inconclusive"),  # a slope at the threshold, measured with noise
])
def test_fit_recovers_the_slope_and_states_the_verdict(slope, noise, verdict):
    trend = fit_trend(SCALES, synthetic(slope, noise))
    assert trend.low <= slope <= trend.high
    assert trend.slope == pytest.approx(slope, abs=3 * noise + 1e-9)
    assert trend.verdict == verdict


def test_a_gap_already_near_zero_counts_as_closed():
    assert fit_trend(SCALES, synthetic(0.0, 0.002, intercept=0.005)).verdict == "closes"
    assert TOL > 0


def test_trends_are_fitted_per_regime_and_baseline_on_a_synthetic_table():
    rows = [{"config": regime, "baseline": b, "params": p, "n_train": 1000, "flops": p * 10, "seed": s,
             "ood_gap": 0.5 + slope * np.log10(p)}
            for regime, slope in (("confounded", 0.0), ("shortcut", -0.08))
            for b in ("ERM", "Oracle") for p in (1e4, 1e5, 1e6) for s in (0, 1)]
    fits = trends(pd.DataFrame(rows), "ood_gap")
    by_params = fits[fits.axis == "params"].set_index(["regime", "baseline"])
    assert by_params.loc[("confounded", "ERM"), "verdict"] == "does not close"
    assert by_params.loc[("shortcut", "Oracle"), "verdict"] == "closes"
    assert by_params.loc[("shortcut", "ERM"), "slope"] == pytest.approx(-0.08)


def test_collect_plot_and_report_from_a_real_sweep(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = {"name": "mini", "configs": [str(CONFIGS / "envs/confounded.yaml")],
             "args": {"data.n_val": 100, "data.n_test": 100, "trainer.max_epochs": 1,
                      "trainer.enable_checkpointing": False},
             "axes": {"model": ["ERM", "Oracle"], "model.width": [8, 32], "data.n_train": [200, 400]},
             "seeds": [0, 1]}
    (tmp_path / "mini.yaml").write_text(json.dumps(sweep))
    run_cli("sweep", "-c", "mini.yaml", "--out", "out")
    run_cli("report", "out/mini")
    table = pd.read_csv(tmp_path / "out/mini/results.csv")
    assert table.run.nunique() == 16
    assert {"params", "n_train", "steps", "flops", "corr", "baseline", "seed", "env", "metric", "value"} <= set(table)
    ood = table[(table.stage == "test") & (table.env == "ood:corr=0.10") & (table.metric == "acc")]
    assert len(ood) == 16 and ood.env_corr.eq(0.1).all()
    for name in ("scaling_params", "scaling_data", "scaling_flops", "id_vs_ood", "reliance_params"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"out/mini/figures/{name}.{ext}").stat().st_size > 1000
    report = (tmp_path / "out/mini/report.md").read_text()
    assert "## OOD gap vs parameters" in report and "![scaling_params](figures/scaling_params.png)" in report
    assert any(v in report for v in ("**closes**", "**does not close**", "**inconclusive**"))


def test_keys_parse_into_stage_env_role_metric_and_correlation():
    from testbed.collect import parse_key

    assert parse_key("test/ood:corr=0.10/acc") == ("test", "ood:corr=0.10", "ood", "acc", 0.1)
    assert parse_key("test/ood:test/acc_wg") == ("test", "ood:test", "ood", "acc_wg", None)
    assert parse_key("test/acc_avg") == ("test", "all", "", "acc_avg", None)


def test_report_of_a_control_sweep_fits_the_closed_loop_return(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = {"name": "drive", "configs": [str(CONFIGS / "control/braking.yaml")],
             "args": {"data.horizon": 40, "data.n_eval": 10, "trainer.max_epochs": 1, "trainer.limit_val_batches": 0,
                      "trainer.enable_checkpointing": False},
             "axes": {"model": ["ERM", "Oracle"], "model.width": [8, 16], "data.n_demos": [2, 4]}, "seeds": [0, 1]}
    (tmp_path / "drive.yaml").write_text(json.dumps(sweep))
    run_cli("sweep", "-c", "drive.yaml", "--out", "out")
    run_cli("report", "out/drive")
    fits = pd.read_csv(tmp_path / "out/drive/fits.csv")
    assert set(fits.metric) == {"ood_gap", "ood_error", "return_shortfall"}
    report = (tmp_path / "out/drive/report.md").read_text()
    assert "## Closed-loop return shortfall vs parameters" in report
    for name in ("closed_loop_params", "closed_loop_data", "offline_vs_closed_loop"):
        assert f"![{name}](figures/{name}.png)" in report
        assert (tmp_path / f"out/drive/figures/{name}.png").stat().st_size > 1000
