"""The report's "Online training" section, from sweep folders in the exact on-disk format of `testbed sweep`."""

import json
from pathlib import Path

import pandas as pd
from conftest import run_cli
from fake_runs import aggregate_metrics, write_manifest, write_run

from testbed.analysis import fits
from testbed.analysis.dose import ONLINE, at_target, dose_table, needed
from testbed.analysis.report import compute_report, section_online
from testbed.analysis.select import selected_runs

WIDTHS = {8: 1e3, 32: 1e4, 128: 1e5}
FRACTIONS = [0.0, 0.1, 1.0]
ORACLE_WG = 0.6  # target: 0.95 * 0.6 = 0.57


def online_run(sweep: Path, run_id: str, width: int, seed: int, fraction: float) -> None:
    """An Online run whose shifted worst-group accuracy climbs by a rate that grows with the model size and with
    the fraction; passive (fraction 0) never leaves ERM's 0.1. 20 rounds of 500 samples."""
    rate = fraction * (1 + WIDTHS[width] / 2e4) * (1 + 0.05 * seed) / 4000
    curve = [{"samples": 500 * k, "interventions": round(500 * k * fraction),
              "shifted_wg": min(0.65, 0.1 + rate * 500 * k)} for k in range(21)]
    final = curve[-1]["shifted_wg"]
    write_run(sweep, run_id, baseline="Online", seed=seed, width=width, params=WIDTHS[width],
              metrics=aggregate_metrics(0.8, final, final, reliance=0.9 - final))
    run, res = (json.loads((sweep / run_id / name).read_text()) for name in ("run.json", "results.json"))
    run |= {"stage": "online", "parent": f"erm-{width}-{seed}"}
    run["axes"]["model.fraction"] = fraction
    res["online"] = {"fraction": fraction, "selection": "random", "interventions": curve[-1]["interventions"],
                     "curve": curve}
    (sweep / run_id / "run.json").write_text(json.dumps(run))
    (sweep / run_id / "results.json").write_text(json.dumps(res))


def continual_run(sweep: Path, run_id: str, width: int, seed: int) -> None:
    write_run(sweep, run_id, baseline="ContinualFinetune", seed=seed, width=width, params=WIDTHS[width],
              metrics=aggregate_metrics(0.9, 0.3, 0.1, reliance=0.9))
    changes = [{}, {"train_corrs": [0.1]}, {"spurious_feature": "background"}]
    phases = [{"phase": k, "changes": c, "metrics": {f"p{k}": {"acc": 0.9, "spurious_reliance": 0.9 - 0.01 * seed}}}
              for k, c in enumerate(changes)]
    res = json.loads((sweep / run_id / "results.json").read_text())
    (sweep / run_id / "results.json").write_text(json.dumps({**res, "phases": phases}))


def test_interventions_to_target_come_from_the_first_curve_point_at_the_target():
    curve = [{"samples": 0, "interventions": 0, "shifted_wg": 0.1},
             {"samples": 100, "interventions": 30, "shifted_wg": 0.57},
             {"samples": 200, "interventions": 60, "shifted_wg": 0.7}]
    assert at_target(ONLINE, curve, 0.57) == curve[1]
    assert at_target(ONLINE, curve, 0.8) is None


def write_sweep(sweep: Path) -> None:
    """ERM, Oracle, Online at FRACTIONS and ContinualFinetune at every width, 3 seeds."""
    for width, params in WIDTHS.items():
        for seed in range(3):
            for baseline, wg, rel in (("ERM", 0.1, 0.9), ("Oracle", ORACLE_WG, 0.05)):
                write_run(sweep, f"{baseline}-{width}-{seed}", baseline=baseline, seed=seed, width=width,
                          params=params, metrics=aggregate_metrics(0.8, wg, wg, reliance=rel))
            for i, fraction in enumerate(FRACTIONS):
                online_run(sweep, f"online-{width}-{seed}-{i}", width, seed, fraction)
            continual_run(sweep, f"continual-{width}-{seed}", width, seed)
    write_manifest(sweep)


def test_the_report_of_a_small_online_sweep_has_the_online_section_with_fit_and_verdicts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "runs/online"
    write_sweep(sweep)

    sel = selected_runs(sweep, save=False)
    online = dose_table(ONLINE, sel.runs, sel.axes)
    assert (online["target"].round(6) == round(0.95 * ORACLE_WG, 6)).all()  # the Oracle's at the same width
    assert online.loc[online["fraction"] == 0, "to_target"].isna().all()  # passive never reaches it
    need = needed(online)
    assert set(need["fraction"]) == set(FRACTIONS)  # each fraction is its own method: never pooled
    at = need[need["fraction"] == 1.0].groupby("params")["to_target"].mean()
    assert at.is_monotonic_decreasing and at.iloc[0] > at.iloc[-1]
    assert need[need["fraction"] == 0.1].dropna()["params"].unique().tolist() == [1e5]  # only the widest gets there

    run_cli("report", str(sweep))
    report = (sweep / "report.md").read_text()
    section = report.split("## Online training", 1)[1].split("\n## ", 1)[0]
    assert ("**Online(fraction=1): interventions to target vs parameters: larger models need fewer "
            "interventions** (x0.") in section
    assert ("**Online(fraction=0.1): interventions to target vs parameters: inconclusive** (the target was reached "
            "at 1 model size(s); 6 size-seed pair(s) never reached the target and are left out)") in section
    assert "Online(fraction=0):" not in section  # passive makes no interventions: no trend in them to fit
    assert "decades per decade of parameters [" in section
    assert "reliance on the new attribute vs parameters: does not close** (larger models learn the new" in section
    assert "| 100,000 | 3 | 0.1 |" in section
    assert (sweep / "figures/online_dose_confounded.png").exists()


def test_online_runs_of_each_fraction_are_their_own_rows_of_the_verdict(tmp_path, monkeypatch):
    """Online runs of different fractions are different methods: the verdict fits each on its own, against the
    Oracle at the same width, instead of one trend through a mix of doses."""
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "runs/online"
    write_sweep(sweep)
    run_cli("report", str(sweep))
    verdict = (sweep / "report.md").read_text().split("## Verdict", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ")[1] for line in verdict.splitlines() if line.startswith("| confounded | ")]
    assert rows == ["ContinualFinetune", "ERM", *(f"Online(fraction={f:g})" for f in FRACTIONS), "Oracle"]
    fits = pd.read_csv(sweep / "fits.csv")
    gap = fits[(fits["axis"] == "params") & (fits["metric"] == "confusion_gap")].set_index("baseline")
    # Passive keeps ERM's worst-group accuracy (0.1): its gap to the Oracle (0.6) is the ERM's, at every width.
    assert gap.loc["Online(fraction=0)", "verdict"] == gap.loc["ERM", "verdict"] == "does not close"
    assert gap.loc["Online(fraction=1)", "verdict"] != "does not close"


def test_the_dose_section_reads_only_the_selected_draws_and_the_oracle_target_comes_from_its_selected_draw(
        tmp_path, monkeypatch):
    """A second draw of every Online(fraction=1) and Oracle run scores worse on validation but better on test: the
    Online one reaches the target after 10 interventions, the Oracle's test worst-group accuracy is 0.9. Selection
    (`id_val`) chooses draw 0 of each, so neither may move the section's numbers."""
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "runs/online"
    write_sweep(sweep)
    for d in [d for d in sweep.iterdir() if d.is_dir()]:
        run, res = (json.loads((d / name).read_text()) for name in ("run.json", "results.json"))
        run |= {"draw": 0, "hparams": {"model.lr": 0.001}}
        res["metrics"]["val/acc_id"] = 0.8
        (d / "run.json").write_text(json.dumps(run))
        (d / "results.json").write_text(json.dumps(res))
        twin = d.parent / f"{d.name}-draw1"
        if res["model"] == "Oracle" or res.get("online", {}).get("fraction") == 1.0:
            twin.mkdir()
            res["metrics"]["val/acc_id"] = 0.5
            if res["model"] == "Oracle":
                res["metrics"]["test/acc_wg"] = 0.9
            else:
                res["online"]["curve"] = [{"samples": 10, "interventions": 10, "shifted_wg": 0.99}]
            twin_run = run | {"draw": 1, "hparams": {"model.lr": 0.01}, "id": twin.name}
            (twin / "run.json").write_text(json.dumps(twin_run))
            (twin / "results.json").write_text(json.dumps(res))
            (twin / "done").write_text("")
    write_manifest(sweep)
    first = selected_runs(sweep, rule="none", save=False)  # draw 0 everywhere: the draws id_val must choose
    assert not first.runs["run"].str.endswith("-draw1").any()
    chosen = dose_table(ONLINE, first.runs, first.axes)
    expected = needed(chosen)
    expected = expected[expected["fraction"] == 1.0].groupby("params")["to_target"].mean()

    run_cli("report", str(sweep))
    section = (sweep / "report.md").read_text().split("## Online training", 1)[1].split("\n## ", 1)[0]
    assert f"| {ORACLE_WG * 0.95:.3f} |" in section and f"| {0.9 * 0.95:.3f} |" not in section
    for params, value in expected.items():
        assert value > 10 and f"| {params:,} | 1 | {0.95 * ORACLE_WG:.3f} | {value:,.0f} |" in section


def test_the_report_is_computed_whole_before_anything_is_written(tmp_path, monkeypatch):
    """`compute_report` holds every verdict, the dose and continual ones included, and writes nothing: a bad option
    or a failing fit leaves the sweep folder as it was, and `write_report` only renders and writes."""
    monkeypatch.setattr(fits, "BOOTSTRAP", 200)
    sweep = tmp_path / "runs/online"
    write_sweep(sweep)
    files = sorted(sweep.rglob("*"))
    report = compute_report(sweep)
    assert sorted(sweep.rglob("*")) == files
    (regime,) = report.verdicts.online.regimes
    assert [(v.fraction, v.word) for v in regime.verdicts] == [(0.1, "inconclusive"),
                                                                (1.0, "larger models need fewer interventions")]
    assert [v.word for v in report.verdicts.continual.verdicts] == ["does not close"]
    assert report.verdicts.control is None and report.reference == "Oracle"
    assert section_online(report)[:3] == ["## Online training", "", f"{ONLINE.question} (Criteria: "
                                                                    "`testbed.analysis.dose`.)"]
