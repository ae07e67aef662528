"""DAgger's dose-response in expert labels, and the report's "Online control" section."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, run_cli
from fake_runs import aggregate_metrics, write_manifest, write_run

from testbed.analysis.dose import CONTROL, at_target, dose_table, needed
from testbed.analysis.select import selected_runs

BRAKING = str(CONFIGS / "control" / "braking.yaml")
HORIZON, EPISODES, ROUNDS = 100, 10, 4


def test_dagger_labels_a_fraction_of_visited_states_and_without_labels_stays_behaviour_cloning(workdir):
    """Oracle (masked cloning) and DAgger at fractions 0, 0.3 and 1 on the braking task. Fraction 0 asks the expert
    nothing and keeps behaviour cloning's crashes and reliance on the light; fraction 1 (DAgger as published) drives
    close to the Oracle; each run counts exactly the labels it used, and its labels to target are read off its
    curve against the Oracle at the same width."""
    sweep = {"name": "dose", "configs": [BRAKING], "seeds": [0],
             "args": {"data.n_demos": 20, "data.n_eval": 30, "data.horizon": HORIZON, "model.width": 64,
                      "trainer.max_epochs": 12, "trainer.limit_val_batches": 0, "trainer.enable_checkpointing": False},
             "stages": {"oracle": {"args": {"model": "Oracle"}},
                        "dagger": {"args": {"model": "DAgger", "model.episodes": EPISODES, "model.rounds": ROUNDS},
                                   "axes": {"model.fraction": [0.0, 0.3, 1.0]}}}}
    (workdir / "dose.yaml").write_text(json.dumps(sweep))
    run_cli("sweep", "-c", "dose.yaml", "--out", "out")
    sel = selected_runs(workdir / "out/dose", save=False)
    (oracle_return,) = sel.runs.loc[sel.runs.baseline == "Oracle", "return_norm"]
    dagger = dose_table(CONTROL, sel.runs, sel.axes).set_index("fraction")
    visited = EPISODES * HORIZON
    assert dagger["dose"].to_dict() == {0.0: 0, 0.3: (ROUNDS - 1) * round(0.3 * visited),
                                                 1.0: (ROUNDS - 1) * visited}
    bc, full = dagger.loc[0.0], dagger.loc[1.0]
    assert bc["crash_rate"] >= 1.0 and bc["reliance"] >= 0.6  # behaviour cloning copies the light and crashes
    assert full["return_norm"] >= oracle_return - 0.2 and full["crash_rate"] <= 0.5
    assert full["reliance"] <= bc["reliance"] - 0.2
    assert np.allclose(dagger["target"], 0.95 * oracle_return)  # the Oracle at the same width
    assert np.isnan(bc["to_target"])  # behaviour cloning never gets there
    curve = json.loads(full["records"])["dagger"]["curve"]
    assert [p["expert_labels"] for p in curve] == [k * visited for k in range(ROUNDS)]  # labels trained on
    assert curve[-1]["return_norm"] == pytest.approx(full["return_norm"])  # the last point is the final policy
    first = next((p["expert_labels"] for p in curve if p["return_norm"] >= full["target"]), np.nan)
    assert full["to_target"] == first or (np.isnan(first) and np.isnan(full["to_target"]))


WIDTHS = {8: 1e3, 32: 1e4, 128: 1e5}
ORACLE_RETURN = 0.9  # target: 0.95 * 0.9 = 0.855


def dagger_run(sweep: Path, run_id: str, width: int, seed: int, fraction: float) -> None:
    """A DAgger run whose return over the expert's climbs from behaviour cloning's -1 as it gains expert labels,
    the faster the larger the policy: it needs 20000 / sqrt(params / 1000) labels to reach 0.9; 6 rounds of
    10000 visited states."""
    need = 20000 / np.sqrt(WIDTHS[width] / 1e3) * (1 + 0.05 * seed)
    curve = [{"rounds": k + 1, "expert_labels": round(fraction * 10000) * k,
              "return_norm": min(0.95, -1 + 1.9 * round(fraction * 10000) * k / need), "crash_rate": 1.0}
             for k in range(6)]
    metrics = aggregate_metrics(0.9, 0.8, 0.5, reliance=0.5) | {"test/return_norm": curve[-1]["return_norm"],
                                                                  "test/crash_rate": 1.0 - fraction}
    write_run(sweep, run_id, baseline="DAgger", seed=seed, width=width, params=WIDTHS[width], regime="braking",
              metrics=metrics)
    run, res = (json.loads((sweep / run_id / name).read_text()) for name in ("run.json", "results.json"))
    run["axes"]["model.fraction"] = fraction
    res["dagger"] = {"fraction": fraction, "intervene": 0.0, "expert_labels": curve[-1]["expert_labels"],
                     "curve": curve}
    (sweep / run_id / "run.json").write_text(json.dumps(run))
    (sweep / run_id / "results.json").write_text(json.dumps(res))


def test_expert_labels_to_target_come_from_the_first_curve_point_at_the_target():
    curve = [{"expert_labels": 0, "return_norm": -2.0}, {"expert_labels": 300, "return_norm": 0.86},
             {"expert_labels": 600, "return_norm": 0.95}]
    assert at_target(CONTROL, curve, 0.855) == curve[1]
    assert at_target(CONTROL, curve, 0.99) is None


def test_the_report_of_a_small_dagger_sweep_has_the_online_control_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "runs/control"
    for width, params in WIDTHS.items():
        for seed in range(3):
            oracle = aggregate_metrics(0.8, 0.8, 0.7, reliance=0.05) | {"test/return_norm": ORACLE_RETURN}
            write_run(sweep, f"oracle-{width}-{seed}", baseline="Oracle", seed=seed, width=width, params=params,
                      regime="braking", metrics=oracle)
            for i, fraction in enumerate([0.0, 0.03, 0.1, 0.3, 1.0]):
                dagger_run(sweep, f"dagger-{width}-{seed}-{i}", width, seed, fraction)
    write_manifest(sweep)

    sel = selected_runs(sweep, save=False)
    dagger = dose_table(CONTROL, sel.runs, sel.axes)
    assert np.allclose(dagger["target"], 0.95 * ORACLE_RETURN)
    assert dagger.loc[dagger["fraction"] == 0, "to_target"].isna().all()
    need = needed(dagger)
    at = need[need["fraction"] == 1.0].groupby("params")["to_target"].mean()  # fractions are never pooled
    assert at.is_monotonic_decreasing and at.iloc[0] >= 2.5 * at.iloc[-1]

    run_cli("report", str(sweep))
    report = (sweep / "report.md").read_text()
    section = report.split("## Online control", 1)[1].split("\n## ", 1)[0]
    assert ("**DAgger(fraction=1): expert labels to target vs parameters: larger models need fewer expert "
            "labels** (x0.") in section
    assert "DAgger(fraction=0):" not in section  # behaviour cloning uses no labels: no trend in them to fit
    assert "decades per decade of parameters [" in section
    assert "| 100,000 | 3 | 0.1 | 5,000 |" in section
    assert (sweep / "figures/control_dose_braking.png").exists()
