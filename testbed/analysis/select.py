"""Model selection: one hyperparameter draw per scale point, chosen by a stated rule.

A scale point is (regime, baseline, every other axis value); a sweep with an `hparams:` block runs several
draws at each, each over the seeds. The rule picks the draw with the best mean over seeds of one metric of
the final model on held-out validation data (Gulrajani and Lopez-Paz 2020 show the rule can change the
conclusion: Colored MNIST, IRM 10.2 under training-domain validation, 58.5 under test-domain selection).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from testbed.analysis.collect import axis_columns, collect, condition, save_table, wide, with_reversed, with_stages
from testbed.errors import ConfigError, check_choice
from testbed.files import write_atomic

# rule -> (metric it maximises, what it means)
RULES = {
    "id_val": ("val/acc_id", "training-domain validation: the draw with the best held-out in-distribution accuracy"),
    "val_wg": ("val/acc_wg_id", "the draw with the best held-out worst-group accuracy (needs group labels; "
                                "SubpopBench's and SpuCo's rule)"),
    "oracle": ("val/acc_avg", "TEST-DOMAIN SELECTION, an upper bound: the draw with the best accuracy on the "
                              "shifted environments; no deployable method could choose this way"),
    "none": (None, "no selection: the first draw (draw 0) at every scale point, as an untuned sweep would run"),
}


def point_columns(runs: pd.DataFrame, axes: list[str]) -> list[str]:
    """The columns that name a scale point: baseline and the sweep's axes."""
    return ["baseline", *[c for c in axes if c in runs]]


def default_rule(runs: pd.DataFrame) -> str:
    """`id_val` when some scale point has several draws, else `none`."""
    return "id_val" if runs["draw"].nunique() > 1 else "none"


def label(rule: str) -> str:
    metric, what = RULES[rule]
    return f"`{rule}`" + (f" (by `{metric}`)" if metric else "") + f": {what}"


def select(runs: pd.DataFrame, rule: str, axes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs of the chosen draw at each scale point, and one row per point naming the choice (ties go to
    the lower draw)."""
    check_choice("select", rule, RULES)
    metric = RULES[rule][0]
    point = point_columns(runs, axes)
    if metric is None:
        chosen = runs.groupby(point, dropna=False)["draw"].min().reset_index()
    else:
        if metric not in runs or runs[metric].isna().all():
            raise ConfigError(f"select: {rule!r} needs the validation metric {metric}, which these runs do not "
                              "record; choose one of " + ", ".join(r for r in RULES if r != rule))
        scores = runs.groupby([*point, "draw"], dropna=False)[metric].mean().reset_index()
        chosen = scores.sort_values([metric, "draw"], ascending=[False, True], kind="stable")
        chosen = chosen.drop_duplicates(point)
    kept = runs.merge(chosen[[*point, "draw"]], on=[*point, "draw"])
    table = kept.groupby([*point, "draw"], dropna=False).agg(
        hparams=("hparams", "first"), seeds=("seed", "nunique")).reset_index()
    table = table.merge(runs.groupby(point, dropna=False)["draw"].nunique().rename("draws").reset_index(), on=point)
    if metric is not None:
        table = table.merge(chosen[[*point, "draw", metric]], on=[*point, "draw"])
    table.insert(0, "rule", rule)
    return kept, table


def hparams_text(hparams: str) -> str:
    values = json.loads(hparams) if isinstance(hparams, str) and hparams else {}
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or "-"


@dataclass
class Selected:
    """What every analysis command works from: one collection of the current runs, then one selection."""

    table: pd.DataFrame  # tidy: every current run x environment x metric
    runs: pd.DataFrame  # one row per run of the chosen draws, with a `regime` column, the degenerate ones left out
    choices: pd.DataFrame  # one row per scale point: the chosen draw and its hyperparameters
    rule: str
    axes: list[str]
    degenerate: pd.DataFrame  # the chosen draws' runs that predict one class (`collect.one_class`), left out


def selected_runs(sweep_dir: Path, all_runs: bool = False, rule: str | None = None, save: bool = True) -> Selected:
    """Collect the sweep's current runs once and select one draw per point; then (with `save`) write
    results.csv and selected.csv, so that a bad option writes nothing. Degenerate runs of the chosen draws
    (constant predictors) are set apart: no fit, point, interval or figure includes them."""
    table = collect(sweep_dir, all_runs)
    axes = axis_columns(table)
    runs = with_stages(with_reversed(wide(table), table))
    runs["regime"] = condition(runs, axes)
    rule = rule or default_rule(runs)
    kept, choices = select(runs, rule, axes)  # a draw whose runs collapse is chosen or not on what they scored
    bad = kept["one_class"].notna() if "one_class" in kept else pd.Series(False, index=kept.index)
    selected = Selected(table, kept[~bad].reset_index(drop=True), choices, rule, axes, kept[bad])
    if save:
        save_selection(selected, sweep_dir)
    return selected


def save_selection(selected: Selected, sweep_dir: Path) -> None:
    save_table(selected.table, sweep_dir)
    write_atomic(sweep_dir / "selected.csv", selected.choices.to_csv(index=False))
