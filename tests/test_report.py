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
    # lr 0.003: at the default 0.001 one epoch left the width-8 Oracle of seed 1 a constant predictor (ID 0.465,
    # class 0 on every group), which the report rightly leaves out; at 0.003 every run learns (Oracle ID 0.53 to
    # 0.66, ERM 0.855 to 0.89).
    sweep = {"name": "mini", "configs": [str(CONFIGS / "envs/confounded.yaml")],
             "args": {"data.n_val": 100, "data.n_test": 100, "trainer.max_epochs": 1, "model.lr": 0.003,
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
    for name in ("scaling_params", "id_vs_ood", "reliance_params", "headline", "accuracy_on_the_line"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"out/mini/figures/{name}.{ext}").stat().st_size > 1000
    assert not (tmp_path / "out/mini/figures/scaling_flops.png").exists()  # no budget swept: FLOPs follow the width
    report = (tmp_path / "out/mini/report.md").read_text()
    # What is true of this sweep only: one training-set size, no budget axis, no control endpoint.
    assert "3 model sizes (18,914 to 76,418 parameters), one training-set size (10,000 samples)" in report
    assert "No run predicts one class" in report.split("## Degenerate runs")[1]
    assert "vs FLOPs" not in report and "budget" not in report.split("## Criterion")[0]
    assert "12 of 12 runs did not converge by their criterion" in report
    criterion = report.split("## Criterion")[1].split("\n## ")[0]
    assert "the nominal one (gap 0.02, reliance 0.05, probe gap 0.02) or" in criterion  # no return shortfall
    assert report.startswith("## Verdict\n") and "![headline](figures/headline.png)" in report
    assert "![scaling_params](figures/scaling_params.png)" in report
    fits = pd.read_csv(tmp_path / "out/mini/fits.csv")
    assert list(fits.columns) == FITS_COLUMNS
    assert set(fits.axis) == {"params"}  # no budget swept: no fit against FLOPs
    assert fits.m_inf.isna().eq(fits.form == "log-linear").all()  # an asymptote for the power law only
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
    assert "8 selected runs (of the sweep file as last run):" in (tmp_path / "out/mini/report.md").read_text()
    run_cli("collect", "out/mini", "--all")
    assert pd.read_csv(tmp_path / "out/mini/results.csv").run.nunique() == 12


def test_keys_parse_into_stage_env_role_metric_and_correlation():
    from testbed.analysis.collect import parse_key

    assert parse_key("test/ood:corr=0.10/acc") == ("test", "ood:corr=0.10", "ood", "acc", 0.1)
    assert parse_key("test/ood:test/acc_wg") == ("test", "ood:test", "ood", "acc_wg", None)
    assert parse_key("test/acc_avg") == ("test", "all", "", "acc_avg", None)


@pytest.mark.slow  # trains 16 small policies for 25 to 50 steps each (about a minute of CPU)
def test_report_of_a_control_sweep_fits_the_closed_loop_return(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Long enough to learn: one epoch (one gradient step on 80 to 160 samples) left every policy braking always or
    # never, and the report rightly left all 16 runs out (test_selection.py covers that case). Here every run
    # predicts both actions (held-out action accuracy: ERM 0.92 to 0.94, Oracle 0.76 to 0.88).
    sweep = {"name": "drive", "configs": [str(CONFIGS / "control/braking.yaml")],
             "args": {"data.horizon": 40, "data.n_eval": 10, "data.batch_size": 32, "model.lr": 0.03,
                      "trainer.max_epochs": 5, "trainer.limit_val_batches": 0, "trainer.enable_checkpointing": False},
             "axes": {"model": ["ERM", "Oracle"], "model.width": [16, 32], "data.n_demos": [4, 8]}, "seeds": [0, 1]}
    (tmp_path / "drive.yaml").write_text(json.dumps(sweep))
    run_cli("sweep", "-c", "drive.yaml", "--out", "out")
    run_cli("report", "out/drive")
    fits = pd.read_csv(tmp_path / "out/drive/fits.csv")
    assert {"confusion_gap", "return_shortfall"} <= set(fits.metric)
    report = (tmp_path / "out/drive/report.md").read_text()
    assert "## Closed-loop return shortfall (1 - return / expert's) vs parameters" in report
    assert "No run predicts one class" in report.split("## Degenerate runs")[1]
    criterion = report.split("## Criterion")[1].split("\n## ")[0]
    assert "the nominal one (gap 0.02, reliance 0.05, return shortfall 0.05, probe gap 0.02) or" in criterion
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


def test_flops_are_fitted_only_where_a_budget_axis_is_swept():
    """Without a swept budget FLOPs follow the model and the data, and a fit against them repeats those fits."""
    from testbed.analysis.report import fitted_axes

    runs = pd.DataFrame({"params": [10, 100, 10, 100], "n_train": 100, "trainer.max_steps": 300})
    assert fitted_axes(runs) == ["params", "n_train"]
    assert fitted_axes(runs.drop(columns="trainer.max_steps")) == ["params", "n_train"]
    assert fitted_axes(runs.assign(**{"trainer.max_steps": [50, 50, 300, 300]})) == ["params", "n_train", "flops"]


def test_m_inf_is_shown_for_the_saturating_form_only():
    """The log-linear form has no asymptote: its row shows no m_inf (and fits.csv leaves it empty)."""
    import numpy as np

    from testbed.analysis.fits import fit_trend
    from testbed.analysis.report import asymptote, detail_table

    x = np.repeat([1e2, 1e3, 1e4, 1e5, 1e6], 3)
    noise = np.tile([-0.004, 0.0, 0.004], 5)
    line = fit_trend(x, 0.8 - 0.1 * np.log10(x) + noise, 0.02, bootstrap=200)
    curve = fit_trend(x, 0.3 + 0.6 * (x / 1e2) ** -0.7 + noise, 0.02, bootstrap=200)
    assert (line.form, curve.form) == ("log-linear", "power law")
    assert np.isnan(asymptote(line)).all() and asymptote(curve)[0] == pytest.approx(0.3, abs=0.02)
    rows = pd.DataFrame([{"regime": "r", "baseline": b, "fit": f, "verdict": "v", "reason": "-"}
                         for b, f in (("line", line), ("curve", curve))])
    header, _, line_row, curve_row = detail_table(rows)
    column = header.split(" | ").index("m_inf (power law) [95% CI]")
    assert line_row.split(" | ")[column] == "-"
    assert curve_row.split(" | ")[column].startswith(f"{curve.m_inf:.3f} [")


def test_id_vs_ood_sizes_markers_on_log_parameters_and_labels_them_readably():
    """76, 818 and 20,866 parameters (and 1.1M) are four visibly different marker areas, linear in log
    parameters, and the legend reads 20.9k and 1.08M, not 20866 and 1084418."""
    import numpy as np

    from testbed.analysis.plots import MARKER_AREA, id_vs_ood

    params = [76, 818, 20866, 1084418]
    runs = pd.DataFrame([{"baseline": b, "params": p, "n_train": n, "acc_id": 0.7, "acc_avg": 0.5}
                         for b in ("ERM", "Oracle") for p in params for n in (289, 10000)])
    grid = id_vs_ood(runs, None)
    drawn = np.concatenate([c.get_sizes() for c in grid.axes.flat[0].collections])
    share = (np.log10(params) - np.log10(76)) / (np.log10(1084418) - np.log10(76))
    assert sorted(set(np.round(drawn, 6))) == pytest.approx(MARKER_AREA[0] + share * np.diff(MARKER_AREA)[0])
    texts = [t.get_text() for t in grid.legend.texts]
    assert {"76", "818", "20.9k", "1.08M", "289", "10k"} <= set(texts)
    assert not {"20866", "1084418", "10000"} & set(texts)


def test_probe_vs_head_draws_the_t_interval_of_each_mean():
    """Head and probe points carry the 95% t interval over seeds, held in [0, 1], as the other figures do."""
    import numpy as np
    from matplotlib.container import ErrorbarContainer
    from scipy import stats

    from testbed.analysis.fit_plots import probe_axes

    wg = {10: [0.2, 0.3, 0.4], 100: [0.5, 0.6, 0.7]}
    runs = pd.DataFrame([{"regime": "r", "baseline": "ERM", "params": p, "seed": s, "acc_wg": v,
                          "probe/acc_wg": min(v + 0.35, 1.0)} for p, vs in wg.items() for s, v in enumerate(vs)])
    fig = probe_axes(runs, "params")
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert [c.get_label() for c in bars] == ["ERM head", "ERM probe"]
    half = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    head = bars[0].lines[2][0].get_segments()
    ends = [y for seg in head for y in (seg[0][1], seg[1][1])]
    assert ends == pytest.approx([0.3 - half, 0.3 + half, 0.6 - half, 0.6 + half])
    probe = bars[1].lines[2][0].get_segments()
    assert max(seg[1][1] for seg in probe) == 1.0  # 0.85, 0.95, 1.0: the interval (to 1.12) stops at 1
