"""Model selection: one hyperparameter draw per scale point, chosen by a stated rule.

A scale point is (regime, baseline, every other axis value); a sweep with an `hparams:` block runs several
draws at each, each over the seeds. The rule picks the draw with the best value of one metric of the final
model on held-out validation data (Gulrajani and Lopez-Paz 2020 show the rule can change the conclusion:
Colored MNIST, IRM 10.2 under training-domain validation, 58.5 under test-domain selection), either
(`PER`) on its mean over seeds, one draw per point, or per seed as DomainBed does (its `model_selection.py`
chooses within each trial seed, `collect_results.py` then averages the chosen runs over trial seeds): the
selection's own noise then enters the spread that the fits' bootstrap resamples.
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


# per -> what one choice is made for
PER = {"point": "one draw per scale point, on its mean over seeds (the choice is taken as given by the intervals)",
       "seed": "one draw per scale point and seed, as DomainBed's protocol (the choice's noise enters the spread)"}
DEFAULT_PER = "point"  # benchmarks/verdicts.py --draws 3 compared the two (benchmarks/README.md)


def point_columns(runs: pd.DataFrame, axes: list[str]) -> list[str]:
    """The columns that name a scale point: baseline and the sweep's axes."""
    return ["baseline", *[c for c in axes if c in runs]]


def default_rule(runs: pd.DataFrame) -> str:
    """`id_val` when some scale point has several draws, else `none`."""
    return "id_val" if runs["draw"].nunique() > 1 else "none"


def label(rule: str, per: str = DEFAULT_PER) -> str:
    metric, what = RULES[rule]
    chosen = f"; {PER[per]}" if metric else ""
    return f"`{rule}`" + (f" (by `{metric}`, per {per})" if metric else "") + f": {what}{chosen}"


def select(runs: pd.DataFrame, rule: str, axes: list[str],
           per: str = DEFAULT_PER) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs of the chosen draw at each scale point (`per` "point") or at each scale point and seed (`per`
    "seed"), and one row per point and chosen draw naming the choice and how many seeds it holds (ties go to the
    lower draw)."""
    check_choice("select", rule, RULES)
    check_choice("select_per", per, PER)
    metric = RULES[rule][0]
    point = point_columns(runs, axes)
    key = [*point, "seed"] if per == "seed" else point
    if metric is None:
        chosen = runs.groupby(key, dropna=False)["draw"].min().reset_index()
    else:
        if metric not in runs or runs[metric].isna().all():
            raise ConfigError(f"select: {rule!r} needs the validation metric {metric}, which these runs do not "
                              "record; choose one of " + ", ".join(r for r in RULES if r != rule))
        scores = runs.groupby([*key, "draw"], dropna=False)[metric].mean().reset_index()
        chosen = scores.sort_values([metric, "draw"], ascending=[False, True], kind="stable")
        chosen = chosen.drop_duplicates(key)
    kept = runs.merge(chosen[[*key, "draw"]], on=[*key, "draw"])
    agg = {"hparams": ("hparams", "first"), "seeds": ("seed", "nunique")}
    if metric is not None:
        agg[metric] = (metric, "mean")  # the chosen runs' mean: the choice's score
    table = kept.groupby([*point, "draw"], dropna=False).agg(**agg).reset_index()
    table = table.merge(runs.groupby(point, dropna=False)["draw"].nunique().rename("draws").reset_index(), on=point)
    table.insert(0, "rule", rule)
    table.insert(1, "per", per)
    return kept, table


def hparams_text(hparams: str) -> str:
    values = json.loads(hparams) if isinstance(hparams, str) and hparams else {}
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or "-"


@dataclass
class Selected:
    """What every analysis command works from: one collection of the current runs, then one selection."""

    table: pd.DataFrame  # tidy: every current run x environment x metric
    runs: pd.DataFrame  # one row per run of the chosen draws, with a `regime` column, the degenerate ones left out
    choices: pd.DataFrame  # one row per scale point and chosen draw: its hyperparameters and seeds
    rule: str
    axes: list[str]
    degenerate: pd.DataFrame  # the chosen draws' runs that predict one class (`collect.one_class`), left out
    per: str = DEFAULT_PER

    @property
    def label(self) -> str:
        return label(self.rule, self.per)


def selected_runs(sweep_dir: Path, all_runs: bool = False, rule: str | None = None, save: bool = True,
                  per: str | None = None) -> Selected:
    """Collect the sweep's current runs once and select one draw per point; then (with `save`) write
    results.csv and selected.csv, so that a bad option writes nothing. Degenerate runs of the chosen draws
    (constant predictors) are set apart: no fit, point, interval or figure includes them."""
    table = collect(sweep_dir, all_runs)
    axes = axis_columns(table)
    runs = with_stages(with_reversed(wide(table), table))
    runs["regime"] = condition(runs, axes)
    rule, per = rule or default_rule(runs), per or DEFAULT_PER
    kept, choices = select(runs, rule, axes, per)  # a draw whose runs collapse is chosen or not on what they scored
    bad = kept["one_class"].notna() if "one_class" in kept else pd.Series(False, index=kept.index)
    selected = Selected(table, kept[~bad].reset_index(drop=True), choices, rule, axes, kept[bad], per)
    if save:
        save_selection(selected, sweep_dir)
    return selected


def save_selection(selected: Selected, sweep_dir: Path) -> None:
    save_table(selected.table, sweep_dir)
    write_atomic(sweep_dir / "selected.csv", selected.choices.to_csv(index=False))
