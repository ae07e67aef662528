"""The dose-response section, one definition with two instances (`ONLINE`, `CONTROL`), on sweep folders in the
exact on-disk format of `testbed sweep` with a known dose to target."""

import json
from pathlib import Path

import numpy as np
import pytest
from fake_runs import write_manifest, write_run

from testbed.analysis import fits
from testbed.analysis.dose import CONTROL, ONLINE, Dose, dose_figures, dose_lines, dose_numbers
from testbed.analysis.select import selected_runs

WIDTHS = {8: 1e3, 16: 3e3, 32: 1e4, 64: 3e4, 128: 1e5}
ORACLE = {8: None, 16: 0.0, 32: 0.8, 64: 0.8, 128: 0.8}  # none at width 8; at 16 one that sets no target (not > 0)


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(fits, "BOOTSTRAP", 200)


def to_target(params: float, seed: int) -> int:
    """The known truth: the dose a run needs to reach the target falls as params^-0.5 (x0.32 per decade)."""
    return round(4000 * (params / 1e3) ** -0.5 * (1 + 0.1 * seed))


def write_sweep(sweep: Path, dose: Dose) -> None:
    """The Oracle (as ORACLE says) and `dose.baseline` at fractions 0 and 1, 3 seeds per width. Fraction 1's curve
    crosses the target (0.95 * 0.8 = 0.76) exactly at `to_target`; fraction 0 stays at 0.1."""
    for width, params in WIDTHS.items():
        for seed in range(3):
            if ORACLE[width] is not None:
                write_run(sweep, f"oracle-{width}-{seed}", baseline="Oracle", seed=seed, width=width, params=params,
                          metrics={f"test/{dose.target.key}": ORACLE[width],
                                   **{f"test/{m.key}": 0.5 for m in dose.others}})
            for fraction in (0.0, 1.0):
                need = to_target(params, seed)
                points = [(0, 0.1), (need // 2, 0.5), (need, 0.77), (2 * need, 0.8)] if fraction else [(0, 0.1)]
                curve = [{dose.dose: d, dose.curve: v, "samples": 10 * d} for d, v in points]
                run_id = f"{dose.record}-{width}-{seed}-{fraction:g}"
                write_run(sweep, run_id, baseline=dose.baseline, seed=seed, width=width, params=params,
                          metrics={f"test/{dose.target.key}": curve[-1][dose.curve],
                                   **{f"test/{m.key}": 0.2 for m in dose.others}},
                          axes={"model.fraction": fraction})
                res = json.loads((sweep / run_id / "results.json").read_text())
                res[dose.record] = {"fraction": fraction, dose.dose: curve[-1][dose.dose], "curve": curve}
                (sweep / run_id / "results.json").write_text(json.dumps(res))
    write_manifest(sweep)


@pytest.mark.parametrize("dose", [ONLINE, CONTROL], ids=["online", "control"])
def test_each_instance_fits_the_dose_to_target_and_names_the_sizes_without_a_target(tmp_path, dose):
    sweep = tmp_path / "runs/s"
    write_sweep(sweep, dose)
    sel = selected_runs(sweep, save=False)
    assert dose_numbers(CONTROL if dose is ONLINE else ONLINE, sel.runs, sel.axes) is None  # its own baseline only
    numbers = dose_numbers(dose, sel.runs, sel.axes)
    (regime,) = numbers.regimes
    assert regime.untargeted == [1e3, 3e3]  # the Oracle missing or not positive: no target, not a miss
    assert set(regime.needed["params"]) == {1e4, 3e4, 1e5}
    table = numbers.table.set_index("run")
    for width, params in list(WIDTHS.items())[2:]:
        for seed in range(3):
            row = table.loc[f"{dose.record}-{width}-{seed}-1"]
            assert row["target"] == pytest.approx(0.76) and row["to_target"] == to_target(params, seed)
            samples = row["samples_to_target"]
            assert samples == 10 * to_target(params, seed) if dose.samples else np.isnan(samples)
    assert table.loc[table["fraction"] == 0, "to_target"].isna().all()
    (verdict,) = regime.verdicts  # fraction 0 uses no dose: nothing to fit
    assert verdict.fraction == 1.0 and verdict.fit.slope == pytest.approx(-0.5, abs=0.01)
    assert verdict.word == f"larger models need fewer {dose.dose_words}"

    (tmp_path / "figures").mkdir()
    lines, figs = dose_lines(numbers), dose_figures(numbers, tmp_path / "figures")
    text = "\n".join(lines)
    assert (f"**{dose.baseline}(fraction=1): {dose.dose_words} to target vs parameters: larger models need fewer "
            f"{dose.dose_words}** (x0.32 per decade [") in text
    assert "no target at 1,000, 3,000 parameters, where the Oracle's" in text and "never reached" not in text
    columns = " | ".join(m.header for m in (dose.target, *dose.others))
    assert f"| parameters | seeds | fraction | {dose.dose_words} | {columns} | reached target |" in lines
    assert ("samples to target (mean)" in text) == (dose.samples is not None)
    assert f"| 100,000 | 1 | 0.760 | {np.mean([to_target(1e5, s) for s in range(3)]):,.0f} |" in text
    assert figs[0] == tmp_path / "figures" / f"{dose.figure}_confounded.png" and figs[0].exists()
    assert f"![{dose.baseline} dose-response confounded](figures/{figs[0].name})" in lines
