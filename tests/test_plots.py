"""The scaling figures read at a glance: decades labelled, legends off the panels, the reversed environment on its
own row, a caption that says what is held fixed and what the bars are (on a synthetic sweep table)."""

import itertools

import pandas as pd

from testbed.analysis.collect import along, axis_columns, condition, wide, with_reversed
from testbed.analysis.plots import curves, facet, id_vs_ood


def sweep_table(regimes: tuple[str, ...] = ("confounded", "shortcut")) -> pd.DataFrame:
    """collect()'s tidy rows for 2 baselines x 3 model sizes (19k to 300k parameters) x 2 data sizes x 2 seeds."""
    rows = []
    for i, (regime, base, params, n, seed) in enumerate(itertools.product(
            regimes, ("ERM", "Oracle"), (18842, 75362, 301442), (500, 2000), (0, 1))):
        run = {"run": f"r{i}", "baseline": base, "params": params, "n_train": n, "seed": seed, "corr": 0.85,
               "flops": params * n * 18, "config": regime, "stage": "test"}
        rev, dec = (0.1, 0.5) if base == "ERM" else (0.6, 0.58)
        rows += [{**run, "env": "all", "role": "", "env_corr": None, "metric": m, "value": v}
                 for m, v in (("acc_id", 0.85), ("acc_avg", (rev + dec) / 2), ("acc_wg", rev / 2),
                              ("spurious_reliance", 0.9), ("causal_sensitivity", 0.1))]
        rows += [{**run, "env": f"ood:corr={c:.2f}", "role": "ood", "env_corr": c, "metric": "acc", "value": v}
                 for c, v in ((0.1, rev + 0.01 * seed), (0.5, dec))]
    return pd.DataFrame(rows)


def test_accuracy_curves_label_decades_keep_the_legend_off_the_panels_and_state_what_is_fixed():
    table = sweep_table()
    runs = with_reversed(wide(table), table)
    runs["regime"] = condition(runs, axis_columns(table))
    col = facet(runs)
    grid = curves(along(runs, "params", col), "params", ["acc_id", "acc_avg", "acc_reversed", "acc_wg"], col)
    fig = grid.figure
    fig.canvas.draw()
    rows = [ax.get_ylabel() for ax in grid.axes[:, 0]]
    assert rows[1:3] == ["OOD accuracy\n(pooled)", "OOD accuracy,\nreversed env\n(corr=0.10)"]
    assert [ax.get_title() for ax in grid.axes[0]] == ["regime = confounded", "regime = shortcut"]
    bottom = grid.axes[-1, 0]
    decades = [t.get_text() for t in bottom.get_xticklabels() if t.get_text()
               and bottom.get_xlim()[0] <= t.get_position()[0] <= bottom.get_xlim()[1]]
    assert decades == [r"$\mathdefault{10^{4}}$", r"$\mathdefault{10^{5}}$"]
    assert len(bottom.get_xticks(minor=True)) > 10
    legend = grid.legend.get_window_extent()
    assert not any(legend.overlaps(ax.get_window_extent()) for ax in grid.axes.flat)
    assert grid.caption.startswith("Held fixed: training samples = 2,000 (the largest).")
    assert "mean over the 2 runs (seeds)" in grid.caption and "95% t interval" in grid.caption


def test_id_vs_ood_marks_the_training_set_size_and_one_regime_gets_no_regime_label():
    table = sweep_table(("confounded",))
    runs = wide(table)
    runs["regime"] = condition(runs, axis_columns(table))
    assert facet(runs) is None
    grid = id_vs_ood(runs, None)
    entries = [t.get_text() for t in grid.legend.get_texts()]
    assert {"training samples", "500", "2k", "parameters"} <= set(entries)  # counts in k and M
    assert all(ax.get_title() == "" for ax in grid.axes.flat)  # no "all"
    assert grid.caption.startswith("Held fixed: nothing (every run).")
