"""The report's dose-response sections: how much online signal a method needs, at each model size, to reach the
Oracle, and whether larger models need less. One section, two instances: `ONLINE` ("Online training": the
interventions of `Online` runs) and `CONTROL` ("Online control": the expert labels of `DAgger` runs).

- **Dose-response**: each run's final endpoints (`Dose.target`, then `Dose.others`) against the dose it used
  (`Dose.dose`: interventions, expert labels), one line per model size. Fraction 0 (passive learning, behaviour
  cloning) uses none.
- **Selection**: only the runs of the draws the report's selection rule chose (`testbed.analysis.select`, on
  validation metrics) count, the Oracle's included, so its target comes from its selected draw. Each fraction is
  its own method (`Online(fraction=f)`), fitted on its own: taking the fewest over the fractions would choose the
  dose by its test curve.
- **Dose to target**: the target is TARGET_SHARE of the Oracle's mean target metric over its selected runs at the
  same scale point (the Oracle runs' axis values, e.g. width and regime). An Oracle whose mean is not positive
  (a policy that crashes more than it earns, a model with no correct worst group: undertrained) sets no target,
  and neither does a missing one: that size is left out of the fits and named, never counted as a miss. A run's
  dose (and samples) to target are those at the first point of its online curve whose `Dose.curve` value reaches
  the target; a seed that never reaches it is left out and counted.
- **Verdict**: for each fraction above 0, `log10(1 + dose to target)` is fitted against parameters (log-linear,
  bootstrap over seeds: `testbed.analysis.fits`), and the slope, in decades of dose per decade of parameters,
  gives it: **larger models need fewer** (its interval below 0), **larger models need more** (above 0), **no
  credible change** (the interval holds 0 and lies within +-FLAT), else **inconclusive** (also with fewer than
  MIN_POINTS sizes or MIN_SEEDS seeds).

Reads the selected runs' table only (their curves in its `records` column, `testbed.analysis.collect.RECORDS`), so
that a published results.csv gives the sections its run folders give: no torch, no Lightning.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from testbed.analysis.collect import method
from testbed.analysis.fits import CONFIDENCE, MIN_POINTS, MIN_SEEDS, Fit, fit_trend

TARGET_SHARE = 0.95
FLAT = 0.25  # decades of dose per decade of parameters (a factor of 1.8) that count as no change


@dataclass(frozen=True)
class Metric:
    """A final endpoint of each run: its column in the selected runs (`key`, a test metric: `collect.wide`), its
    column of the section's table (header, format) and, where `label` is given, its panel of the figure (y label,
    limits; None leaves that side to matplotlib)."""
    key: str
    name: str
    header: str
    fmt: str = ".3f"
    label: str = ""
    ylim: tuple[float | None, float | None] | None = None


@dataclass(frozen=True)
class Dose:
    """What one dose-response section reads and how it words it."""
    baseline: str  # the runs' baseline, e.g. "Online"
    record: str  # the results.json entry with the run's `fraction`, its dose and its curve, e.g. "online"
    dose: str  # the dose's key in that entry and in each curve point, e.g. "interventions"
    dose_words: str  # e.g. "interventions", "expert labels"
    zero: str  # what fraction 0 is, e.g. "passive"
    curve: str  # the curve points' key of the target metric, e.g. "shifted_wg"
    target: Metric  # the endpoint the target is a share of the Oracle's
    target_words: str  # e.g. "shifted worst-group accuracy"
    others: tuple[Metric, ...]  # the other endpoints tabulated (and drawn, where labelled)
    samples: str | None  # the curve points' key of the samples seen, reported at the target too; None: not
    size: str  # what a model is, e.g. "model", "policy"
    question: str  # the section's first line
    figure: str  # the figure's file stem before the regime


UNIT = (-0.02, 1.02)
ONLINE = Dose(
    baseline="Online", record="online", dose="interventions", dose_words="interventions", zero="passive",
    curve="shifted_wg", samples="samples", size="model", figure="online_dose",
    target=Metric("acc_wg", "shifted_wg", "shifted wg acc", label="shifted worst-group accuracy", ylim=UNIT),
    target_words="shifted worst-group accuracy",
    others=(Metric("spurious_reliance", "reliance", "reliance", label="spurious reliance", ylim=UNIT),),
    question="How much online signal does a model of each size need to reach the Oracle, and do larger models need "
             "less?")
CONTROL = Dose(
    baseline="DAgger", record="dagger", dose="expert_labels", dose_words="expert labels", zero="behaviour cloning",
    curve="return_norm", samples=None, size="policy", figure="control_dose",
    target=Metric("return_norm", "return_norm", "return / expert's", label="return / expert's return"),
    target_words="return over the expert's",
    others=(Metric("crash_rate", "crash_rate", "crashes per episode", ".2f", label="crashes per episode",
                   ylim=(0, None)),
            Metric("spurious_reliance", "reliance", "reliance")),
    question="How many expert labels does DAgger need, at each policy size, to drive as well as masked cloning (the "
             "Oracle), and do larger policies need fewer?")


def oracle_targets(runs: pd.DataFrame, dosed: pd.DataFrame, axes: list[str],
                   metric: str) -> tuple[list[str], dict[tuple, float]]:
    """The scale-point columns (the `axes` both the Oracle's and the dosed runs have, but the baseline's `model`)
    and TARGET_SHARE of the Oracle's mean `metric` at each point."""
    oracle = runs[method(runs) == "Oracle"]
    if oracle.empty:
        return [], {}
    point = [c for c in axes if c != "model" and c in runs and oracle[c].notna().all() and dosed[c].notna().all()]
    values = oracle[metric] if metric in oracle else pd.Series(np.nan, oracle.index)
    if not point:  # one scale point: the sweep has no axes
        return point, {(): TARGET_SHARE * values.mean()}
    means = values.groupby([oracle[c].astype(str) for c in point]).mean()
    return point, {(k if isinstance(k, tuple) else (k,)): TARGET_SHARE * v for k, v in means.items()}


def at_target(dose: Dose, curve: list[dict], target: float) -> dict | None:
    """The first point of an online curve whose target metric reaches `target`."""
    return next((p for p in curve if p.get(dose.curve, -np.inf) >= target), None)


def dose_table(dose: Dose, runs: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """The runs of `dose.baseline` among `runs` (the selected runs, `testbed.analysis.select`, of a sweep with
    `axes`) with their fraction, dose (`dose`), final endpoints (by their names), target (NaN where none) and the
    dose and samples to it (`to_target`, `samples_to_target`; NaN: not reached)."""
    dosed = runs[method(runs) == dose.baseline].copy() if not runs.empty else runs
    if dosed.empty:
        return dosed
    point, targets = oracle_targets(runs, dosed, axes, dose.target.key)
    record = dosed["records"].map(lambda r: json.loads(r)[dose.record])
    dosed["fraction"] = record.map(lambda r: r["fraction"])
    dosed["dose"] = record.map(lambda r: r[dose.dose])
    for m in (dose.target, *dose.others):
        dosed[m.name] = dosed[m.key] if m.key in dosed else np.nan
    target = [targets.get(tuple(str(row[c]) for c in point), np.nan) for _, row in dosed.iterrows()]
    dosed["target"] = [t if t > 0 else np.nan for t in target]  # an Oracle that does not get there sets no target
    hits = [at_target(dose, r["curve"], t) if np.isfinite(t) else None for r, t in zip(record, dosed["target"])]
    dosed["to_target"] = [np.nan if h is None else float(h[dose.dose]) for h in hits]
    dosed["samples_to_target"] = [np.nan if h is None or dose.samples is None else float(h[dose.samples])
                                  for h in hits]
    return dosed


def needed(table: pd.DataFrame) -> pd.DataFrame:
    """Per regime, fraction, model size and seed: the dose (and samples) to target (mean over the runs there, NaN
    where none reached it) and the target. Fractions are never pooled: each is its own method."""
    return table.groupby(["regime", "fraction", "params", "seed"], as_index=False).agg(
        to_target=("to_target", "mean"), samples=("samples_to_target", "mean"), target=("target", "mean"))


def dose_verdict(group: pd.DataFrame, words: str, confidence: float = CONFIDENCE) -> tuple[str, str, Fit | None]:
    """The verdict on the dose to target (`to_target` of `group`, one regime and fraction; `words` names it)
    against parameters, its reason, and the Fit (intervals at `confidence`)."""
    reached = group.dropna(subset=["to_target"])
    missed = len(group) - len(reached)
    note = f"; {missed} size-seed pair(s) never reached the target and are left out" if missed else ""
    if reached["params"].nunique() < 2:
        return "inconclusive", f"the target was reached at {reached['params'].nunique()} model size(s){note}", None
    fit = fit_trend(reached["params"].to_numpy(), np.log10(1 + reached["to_target"].to_numpy()), 0.0,
                    seeds=reached["seed"].to_numpy(), confidence=confidence)
    ci = f"{fit.slope:+.2f} decades per decade of parameters [{fit.slope_low:+.2f}, {fit.slope_high:+.2f}]"
    factor = f"x{10 ** fit.slope:.2g} per decade [x{10 ** fit.slope_low:.2g}, x{10 ** fit.slope_high:.2g}]"
    if fit.points < MIN_POINTS or fit.seeds < MIN_SEEDS:
        return "inconclusive", (f"{fit.points} model size(s) and {fit.seeds} seed(s) per size reached the target; "
                                f"{MIN_POINTS} and {MIN_SEEDS} are needed ({ci}){note}"), fit
    if fit.slope_high < 0:
        return f"larger models need fewer {words}", f"{factor}: {ci}{note}", fit
    if fit.slope_low > 0:
        return f"larger models need more {words}", f"{factor}: {ci}{note}", fit
    if -FLAT <= fit.slope_low and fit.slope_high <= FLAT:
        return "no credible change", f"{ci}, within +-{FLAT:g}{note}", fit
    return "inconclusive", f"{ci}: more seeds or sizes would decide{note}", fit


@dataclass
class FractionVerdict:
    fraction: float
    word: str
    reason: str
    fit: Fit | None


@dataclass
class Regime:
    """One regime's numbers: its runs, the dose to target per fraction, size and seed (sizes with a target only),
    the sizes without one, and a verdict per fraction above 0."""
    regime: str
    runs: pd.DataFrame
    needed: pd.DataFrame
    untargeted: list[int]
    verdicts: list[FractionVerdict]


@dataclass
class DoseNumbers:
    """A dose-response section's numbers: every run's row (`dose_table`) and each regime's."""
    dose: Dose
    table: pd.DataFrame
    regimes: list[Regime]


def dose_numbers(dose: Dose, runs: pd.DataFrame, axes: list[str],
                 confidence: float = CONFIDENCE) -> DoseNumbers | None:
    """The section's numbers from `runs` (the selected runs of a sweep with `axes`), the verdicts' intervals at
    `confidence`; None without runs of `dose.baseline`."""
    table = dose_table(dose, runs, axes)
    if table.empty:
        return None
    regimes = []
    for regime in sorted(table["regime"].unique()):
        sub = table[table["regime"] == regime]
        need = needed(sub[sub["target"].notna()])
        verdicts = [FractionVerdict(fraction, *dose_verdict(at, dose.dose_words, confidence))
                    for fraction, at in need[need["fraction"] > 0].groupby("fraction")]
        regimes.append(Regime(regime, sub, need, sorted(sub.loc[sub["target"].isna(), "params"].unique()), verdicts))
    return DoseNumbers(dose, table, regimes)


def figure_name(numbers: DoseNumbers, regime: Regime) -> str:
    """The file name of a regime's PNG under the report's `figures/` (its PDF beside it)."""
    return Path(f"{numbers.dose.figure}_{regime.regime}").with_suffix(".png").name


def dose_figure(numbers: DoseNumbers, regime: Regime, figures: Path) -> list[Path]:
    """The labelled endpoints (the target first) against the dose, one line per model size, the target dotted;
    written under `figures` (`figure_name`)."""
    import matplotlib.pyplot as plt

    from testbed.analysis.fit_plots import save

    dose, sub = numbers.dose, regime.runs
    panels = [m for m in (dose.target, *dose.others) if m.label]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    axes = axes[0]
    sizes = sorted(sub["params"].unique())
    cmap = plt.get_cmap("viridis")
    for i, params in enumerate(sizes):
        at = sub[sub["params"] == params]
        mean = at.groupby("fraction")[["dose", *(m.name for m in panels)]].mean()
        colour = cmap(i / max(1, len(sizes) - 1))
        for ax, m in zip(axes, panels):
            ax.plot(mean["dose"], mean[m.name], "o-", color=colour, label=f"{params:,} params")
        if np.isfinite(at["target"].mean()):
            axes[0].axhline(at["target"].mean(), color=colour, ls=":", lw=1)
    positive = sub.loc[sub["dose"] > 0, "dose"]
    low = int(np.floor(np.log10(positive.min()))) if len(positive) else 0
    high = int(np.ceil(np.log10(positive.max()))) if len(positive) else 1
    for ax, m in zip(axes, panels):
        ax.set_xscale("symlog", linthresh=10.0**low, linscale=0.5)  # fraction 0 sits apart, on the linear part
        ax.set_xticks([0, *(10.0**k for k in range(low, high + 1))])
        ax.set_xlim(-0.5 * 10.0**low, 10.0**high)  # no empty negative side
        ax.set_xlabel(f"{dose.dose_words} (symlog; 0 = {dose.zero})")
        ax.set_ylabel(m.label)
        if m.ylim:
            ax.set_ylim(*m.ylim)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title=f"{dose.size} size", title_fontsize=8)
    fig.suptitle(f"{dose.baseline} dose-response, regime {regime.regime} (final {dose.size}, mean over seeds; "
                 f"dotted: target, {TARGET_SHARE:.0%} of the Oracle's)", fontsize=10)
    fig.tight_layout()
    return save(fig, figures / figure_name(numbers, regime))


def dose_figures(numbers: DoseNumbers | None, figures: Path) -> list[Path]:
    """Each regime's figure, written under `figures`; none without numbers."""
    if numbers is None:
        return []
    return [p for regime in numbers.regimes for p in dose_figure(numbers, regime, figures)]


def dose_lines(numbers: DoseNumbers | None) -> list[str]:
    """The section's lines (its figures are `dose_figures`'); none without numbers."""
    if numbers is None:
        return []
    dose, table = numbers.dose, numbers.table
    words = dose.dose_words
    out = [f"{dose.question} (Criteria: `testbed.analysis.dose`.)", "",
           f"Target: {TARGET_SHARE:.0%} of the Oracle's {dose.target_words} at the same scale point"
           + ("." if table["target"].notna().any() else "; **the sweep has no Oracle runs at these scale points, so "
              "no target can be resolved**."), ""]
    for regime in numbers.regimes:
        sizes = ", ".join(f"{p:,}" for p in regime.untargeted)
        note = (f"; no target at {sizes} parameters, where the Oracle's {dose.target_words} is not positive (or the "
                "Oracle is missing)") if regime.untargeted else ""
        out += [f"### Regime {regime.regime}", ""]
        for v in regime.verdicts:
            out += [f"**{dose.baseline}(fraction={v.fraction:g}): {words} to target vs parameters: {v.word}** "
                    f"({v.reason}{note}).", ""]
        endpoints = (dose.target, *dose.others)
        out += [f"| parameters | seeds | fraction | {words} | " + "".join(f"{m.header} | " for m in endpoints)
                + "reached target |", "|---" * (len(endpoints) + 5) + "|"]
        for (params, fraction), g in regime.runs.groupby(["params", "fraction"]):
            out.append(f"| {params:,} | {len(g)} | {fraction:g} | {g['dose'].mean():,.0f} | "
                       + "".join(f"{g[m.name].mean():{m.fmt}} | " for m in endpoints)
                       + f"{g['to_target'].notna().sum()}/{len(g)} |")
        samples = " samples to target (mean) |" if dose.samples else ""
        out += ["", f"| parameters | fraction | target | {words} to target (mean) |{samples} seeds that reached it |",
                "|---" * (6 if dose.samples else 5) + "|"]
        for (params, fraction), g in regime.needed.groupby(["params", "fraction"]):
            hit = g.dropna(subset=["to_target"])
            cells = [f"{hit['to_target'].mean():,.0f}" if len(hit) else "-"]
            cells += [f"{hit['samples'].mean():,.0f}" if len(hit) else "-"] if dose.samples else []
            out.append(f"| {params:,} | {fraction:g} | {g['target'].mean():.3f} | " + " | ".join(cells)
                       + f" | {len(hit)}/{len(g)} |")
        out += ["", f"![{dose.baseline} dose-response {regime.regime}](figures/{figure_name(numbers, regime)})", ""]
    return out
