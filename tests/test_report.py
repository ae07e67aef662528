"""Collect, plot and report from real sweeps: the verdict's layout, the files, and current runs only
(the verdicts themselves on synthetic truths: test_verdicts.py)."""

import json

import pandas as pd
import pytest
from conftest import CONFIGS, run_cli

from testbed.analysis.collect import along

FITS_COLUMNS = ["regime", "baseline", "axis", "metric", "form", "slope", "m_inf", "m_inf_low", "m_inf_high",
                "closing_scale", "closing_low", "closing_high", "verdict"]


@pytest.mark.slow  # trains 12 tiny runs
def test_report_of_a_real_sweep_and_of_its_edited_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sweep = {"name": "mini", "configs": [str(CONFIGS / "envs/confounded.yaml")],
             "args": {"data.n_val": 100, "data.n_test": 100, "trainer.max_epochs": 1,
                      "trainer.enable_checkpointing": False, "trainer.limit_val_batches": 0},
             "axes": {"model": ["ERM", "Oracle"], "model.width": [8, 16, 32]}, "seeds": [0, 1]}
    (tmp_path / "mini.yaml").write_text(json.dumps(sweep))
    run_cli("sweep", "-c", "mini.yaml", "--out", "out")
    assert len(json.loads((tmp_path / "out/mini/manifest.json").read_text())["runs"]) == 12
    run_cli("report", "out/mini")
    table = pd.read_csv(tmp_path / "out/mini/results.csv")
    assert table.run.nunique() == 12
    assert {"params", "n_train", "steps", "flops", "corr", "baseline", "seed", "env", "metric", "value"} <= set(table)
    ood = table[(table.stage == "test") & (table.env == "ood:corr=0.10") & (table.metric == "acc")]
    assert len(ood) == 12 and ood.env_corr.eq(0.1).all()
    for name in ("scaling_params", "scaling_flops", "id_vs_ood", "reliance_params", "headline",
                 "accuracy_on_the_line"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"out/mini/figures/{name}.{ext}").stat().st_size > 1000
    report = (tmp_path / "out/mini/report.md").read_text()
    assert report.startswith("## Verdict\n") and "![headline](figures/headline.png)" in report
    assert "![scaling_params](figures/scaling_params.png)" in report
    fits = pd.read_csv(tmp_path / "out/mini/fits.csv")
    assert list(fits.columns) == FITS_COLUMNS
    oracle = fits[(fits.baseline == "Oracle") & (fits.metric == "confusion_gap")]
    assert len(oracle) and (oracle.verdict == "reference").all() and (oracle.slope == 0).all()
    points = report.split("## Endpoints at each model size")[1].split("\n## ")[0].splitlines()
    header = next(line for line in points if line.startswith("| regime |")).split(" | ")
    gap = header.index("confusion_gap")
    assert all(line.split(" | ")[gap] == "0.000" for line in points if "| Oracle |" in line)
    assert set(fits.verdict) <= {"inconclusive", "reference"}  # 2 seeds: nothing more is claimed
    assert "## Accuracy on the line" in report and "| all | ERM | 6 |" in report

    # The sweep file is edited (one width fewer): its runs are all done, and only they are reported.
    monkeypatch.setattr("testbed.analysis.plots.plot_sweep", lambda sweep_dir, runs: [])  # drawn above already
    sweep["axes"]["model.width"] = [8, 16]
    (tmp_path / "mini.yaml").write_text(json.dumps(sweep))
    run_cli("sweep", "-c", "mini.yaml", "--out", "out")
    run_cli("report", "out/mini")
    assert pd.read_csv(tmp_path / "out/mini/results.csv").run.nunique() == 8
    assert "8 selected runs (of the sweep file as last run)" in (tmp_path / "out/mini/report.md").read_text()
    run_cli("collect", "out/mini", "--all")
    assert pd.read_csv(tmp_path / "out/mini/results.csv").run.nunique() == 12


def test_keys_parse_into_stage_env_role_metric_and_correlation():
    from testbed.analysis.collect import parse_key

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
    assert {"confusion_gap", "return_shortfall"} <= set(fits.metric)
    report = (tmp_path / "out/drive/report.md").read_text()
    assert "## Closed-loop return shortfall (1 - return / expert's) vs parameters" in report
    for name in ("closed_loop_params", "closed_loop_data", "offline_vs_closed_loop"):
        assert f"![{name}](figures/{name}.png)" in report
        assert (tmp_path / f"out/drive/figures/{name}.png").stat().st_size > 1000


def test_each_scale_axis_is_read_with_the_others_at_their_largest():
    # A star design: widths at the largest data and budget, data at the largest width and budget, budgets at both.
    rows = [(p, n, b, seed) for p, n, b in [(10, 100, 300), (100, 100, 300), (1000, 100, 300), (1000, 10, 300),
                                            (1000, 30, 300), (1000, 100, 50), (1000, 100, 120)] for seed in (0, 1)]
    runs = pd.DataFrame(rows, columns=["params", "n_train", "trainer.max_steps", "seed"]).assign(
        regime="r", baseline="ERM", flops=lambda d: 6.0 * d["params"] * d["trainer.max_steps"] + d["seed"])
    assert sorted(along(runs, "params")["params"].unique()) == [10, 100, 1000]
    assert (along(runs, "params")["trainer.max_steps"] == 300).all()
    assert sorted(along(runs, "n_train")["n_train"].unique()) == [10, 30, 100]
    flops = along(runs, "flops")
    assert sorted(flops["trainer.max_steps"].unique()) == [50, 120, 300] and (flops["params"] == 1000).all()
    assert flops.groupby("trainer.max_steps")["flops"].nunique().eq(1).all()  # one x per point: the seeds' mean
