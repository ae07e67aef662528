"""The report's "Online training" section: how much online signal a model of each size needs, and whether continual
fine-tuning learns the new spurious correlation at every size.

- **Dose-response** (`Online` runs, usually a stage from the same-scale ERM run): final shifted worst-group accuracy
  and spurious reliance against the interventions each run made, one line per model size.
- **Selection**: only the runs of the draws the report's selection rule chose (`testbed.analysis.select`, on
  validation metrics) count, the Oracle's included, so its target comes from its selected draw. Each fraction is
  its own method (`Online(fraction=f)`), fitted on its own: taking the fewest interventions over the fractions
  would choose the dose by its test curve.
- **Interventions to target**: the target is TARGET_SHARE of the Oracle's shifted worst-group accuracy
  (`test/acc_wg`, mean over its selected runs) at the same scale point (the Oracle runs' axis values, e.g. width
  and regime). A run's interventions (and samples) to target are those at the first point of its online curve
  whose pooled shifted worst-group accuracy reaches it; a seed that never reaches it is left out and counted.
  For each fraction above 0 (passive learning makes no interventions), `log10(1 + interventions)` is fitted
  against parameters (log-linear, bootstrap over seeds: `testbed.analysis.fits`), and the slope, in decades of
  interventions per decade of parameters, gives the verdict: **larger models need fewer interventions** (its
  interval below 0), **larger models need more** (above 0), **no credible change** (the interval holds 0 and lies
  within +-FLAT), else **inconclusive** (also with fewer than MIN_POINTS sizes or MIN_SEEDS seeds).
- **Continual fine-tuning** (`ContinualFinetune` runs): each phase's spurious reliance on that phase's own
  attribute at the phase's end, per model size; the phase that brings a new attribute (`spurious_feature`
  changed; else the last) is fitted against parameters with the report's criterion for reliance (tolerance
  `TOLERANCE["spurious_reliance"]`): "does not close" means larger models learn the new correlation too.

Reads run.json and results.json only: no torch, no Lightning.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from testbed.analysis.collect import condition, current_runs
from testbed.analysis.endpoints import TOLERANCE
from testbed.analysis.fits import MIN_POINTS, MIN_SEEDS, fit_trend, verdict

TARGET_SHARE = 0.95
FLAT = 0.25  # decades of interventions per decade of parameters (a factor of 1.8) that count as no change
OWN = {"run", "stage", "parent", "baseline", "seed", "params", "n_train", "results"}


def read_runs(sweep_dir: Path, all_runs: bool = False, keep: set[str] | None = None) -> pd.DataFrame:
    """One row per finished run (of those in `keep`, the selected runs' ids, if given): its axes (columns),
    stage, baseline, seed, parameters and results.json."""
    rows = []
    for d in current_runs(sweep_dir, all_runs):
        if keep is not None and d.name not in keep:
            continue
        try:
            run, res = (json.loads((d / name).read_text()) for name in ("run.json", "results.json"))
        except (OSError, ValueError):
            continue
        axes = {k: v if isinstance(v, str | int | float) else json.dumps(v) for k, v in run["axes"].items()}
        rows.append({**axes, "run": d.name, "stage": run.get("stage", ""), "parent": run.get("parent", ""),
                     "baseline": res["model"], "seed": run["seed"], "params": res["params"], "n_train": res["n_train"],
                     "results": res})
    return pd.DataFrame(rows)


def regime_of(runs: pd.DataFrame) -> pd.Series:
    """Each run's condition, as the verdicts define it (`testbed.analysis.collect.condition`)."""
    return condition(runs, [c for c in runs.columns if c not in OWN])


def to_target(curve: list[dict], target: float) -> tuple[int, int] | None:
    """(samples, interventions) at the first curve point whose shifted worst-group accuracy reaches `target`."""
    hit = next((p for p in curve if p.get("shifted_wg", -1) >= target), None)
    return None if hit is None else (hit["samples"], hit["interventions"])


def oracle_targets(runs: pd.DataFrame, online: pd.DataFrame,
                   metric: str = "test/acc_wg") -> tuple[list[str], dict[tuple, float]]:
    """The scale-point columns (the axes both the Oracle's and the online runs have, but the baseline's `model`) and
    TARGET_SHARE of the Oracle's mean `metric` (shifted worst-group accuracy) at each point."""
    oracle = runs[runs["baseline"] == "Oracle"]
    if oracle.empty:
        return [], {}
    point = [c for c in oracle.columns if c not in OWN | {"model"} and oracle[c].notna().all()
             and online[c].notna().all()]
    wg = oracle["results"].map(lambda r: r["metrics"].get(metric, np.nan))
    if not point:  # one scale point: the sweep has no axes
        return point, {(): TARGET_SHARE * wg.mean()}
    means = wg.groupby([oracle[c].astype(str) for c in point]).mean()
    return point, {(k if isinstance(k, tuple) else (k,)): TARGET_SHARE * v for k, v in means.items()}


def online_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The Online runs with their regime, fraction, final endpoints, target and samples/interventions to it."""
    online = runs[runs["baseline"] == "Online"].copy()
    if online.empty:
        return online
    point, targets = oracle_targets(runs, online)
    online["regime"] = regime_of(online)
    online["fraction"] = online["results"].map(lambda r: r["online"]["fraction"])
    online["interventions"] = online["results"].map(lambda r: r["online"]["interventions"])
    online["shifted_wg"] = online["results"].map(lambda r: r["metrics"].get("test/acc_wg", np.nan))
    online["reliance"] = online["results"].map(lambda r: r["metrics"].get("test/spurious_reliance", np.nan))
    online["target"] = [targets.get(tuple(str(row[c]) for c in point), np.nan) for _, row in online.iterrows()]
    reached = [to_target(r["online"]["curve"], t) if np.isfinite(t) else None
               for r, t in zip(online["results"], online["target"])]
    online["samples_to_target"] = [np.nan if h is None else h[0] for h in reached]
    online["interventions_to_target"] = [np.nan if h is None else h[1] for h in reached]
    return online


def needed(online: pd.DataFrame) -> pd.DataFrame:
    """Per regime, fraction, model size and seed: the interventions (and samples) to target (mean over the runs
    there, NaN where none reached it). Fractions are never pooled: each is its own method."""
    keys = ["regime", "fraction", "params", "seed"]
    return online.groupby(keys, as_index=False).agg(interventions=("interventions_to_target", "mean"),
                                                    samples=("samples_to_target", "mean"),
                                                    target=("target", "mean"))


def intervention_verdict(group: pd.DataFrame, what: str = "interventions") -> tuple[str, str, object]:
    """The verdict on `what` (a column of `group`: interventions, expert_labels) to target against parameters
    for one regime, its reason, and the Fit."""
    reached = group.dropna(subset=[what])
    missed, words = len(group) - len(reached), what.replace("_", " ")
    note = f"; {missed} size-seed pair(s) never reached the target and are left out" if missed else ""
    if reached["params"].nunique() < 2:
        return "inconclusive", f"the target was reached at {reached['params'].nunique()} model size(s){note}", None
    fit = fit_trend(reached["params"].to_numpy(), np.log10(1 + reached[what].to_numpy()), 0.0)
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


def dose_figure(online: pd.DataFrame, regime: str, path: Path) -> list[Path]:
    """Shifted worst-group accuracy and spurious reliance against interventions, one line per model size."""
    import matplotlib.pyplot as plt

    from testbed.analysis.fit_plots import save

    sub = online[online["regime"] == regime]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), squeeze=True)
    sizes = sorted(sub["params"].unique())
    cmap = plt.get_cmap("viridis")
    for i, params in enumerate(sizes):
        mean = sub[sub["params"] == params].groupby("fraction")[["interventions", "shifted_wg", "reliance"]].mean()
        colour = cmap(i / max(1, len(sizes) - 1))
        for ax, col in zip(axes, ("shifted_wg", "reliance")):
            ax.plot(mean["interventions"], mean[col], "o-", color=colour, label=f"{params:,} params")
        target = sub[sub["params"] == params]["target"].mean()
        if np.isfinite(target):
            axes[0].axhline(target, color=colour, ls=":", lw=1)
    positive = sub.loc[sub["interventions"] > 0, "interventions"]
    low = int(np.floor(np.log10(positive.min()))) if len(positive) else 0
    high = int(np.ceil(np.log10(positive.max()))) if len(positive) else 1
    for ax, label in zip(axes, ("shifted worst-group accuracy", "spurious reliance")):
        ax.set_xscale("symlog", linthresh=10.0**low, linscale=0.5)  # passive (0) sits apart, on the linear part
        ax.set_xticks([0, *(10.0**k for k in range(low, high + 1))])
        ax.set_xlim(-0.5 * 10.0**low, 10.0**high)  # no empty negative side
        ax.set_xlabel("interventions (symlog; 0 = passive)")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="model size", title_fontsize=8)
    fig.suptitle(f"Online dose-response, regime {regime} (mean over seeds; dotted: target, "
                 f"{TARGET_SHARE:.0%} of the Oracle)", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def continual_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per ContinualFinetune run and phase: reliance on that phase's attribute at the phase's end."""
    rows, runs = [], runs.assign(regime=regime_of(runs))
    for _, run in runs[runs["baseline"] == "ContinualFinetune"].iterrows():
        phases = run["results"].get("phases") or []
        new = next((p["phase"] for p in phases if "spurious_feature" in (p.get("changes") or {})),
                   phases[-1]["phase"] if phases else None)
        for p in phases:
            rows.append({"regime": run["regime"], "params": run["params"],
                         "seed": run["seed"], "phase": p["phase"], "new": p["phase"] == new,
                         "changes": json.dumps(p.get("changes") or {}),
                         "reliance": p["metrics"][f"p{p['phase']}"].get("spurious_reliance", np.nan)})
    return pd.DataFrame(rows)


def online_section(sweep_dir: Path, figures: Path, all_runs: bool = False,
                   keep: set[str] | None = None) -> tuple[list[str], list[Path]]:
    """The section's lines and figures, from the runs in `keep` (the selected runs' ids; all if None); none if
    there are no Online or ContinualFinetune runs."""
    runs = read_runs(sweep_dir, all_runs, keep)
    if runs.empty:
        return [], []
    online, continual = online_table(runs), continual_table(runs)
    if online.empty and continual.empty:
        return [], []
    out, figs = ["How much online signal does a model of each size need to reach the Oracle, and does continual "
                 "fine-tuning learn the new spurious correlation at every size? "
                 "(Criteria: `testbed.analysis.online_report`.)",
                 ""], []
    if not online.empty:
        out += [f"Target: {TARGET_SHARE:.0%} of the Oracle's shifted worst-group accuracy at the same scale point"
                + ("." if online["target"].notna().any() else "; **the sweep has no Oracle runs at these scale "
                   "points, so no target can be resolved**."), ""]
        for regime in sorted(online["regime"].unique()):
            sub, need = online[online["regime"] == regime], needed(online[online["regime"] == regime])
            out += [f"### Regime {regime}", ""]
            for fraction, at in need[need["fraction"] > 0].groupby("fraction"):
                word, reason, _ = intervention_verdict(at)
                out.append(f"**Online(fraction={fraction:g}): interventions to target vs parameters: {word}** "
                           f"({reason}).")
                out.append("")
            out += ["| parameters | seeds | fraction | interventions | shifted wg acc | reliance | reached target |",
                    "|---|---|---|---|---|---|---|"]
            for (params, fraction), g in sub.groupby(["params", "fraction"]):
                out.append(f"| {params:,} | {len(g)} | {fraction:g} | {g['interventions'].mean():,.0f} | "
                           f"{g['shifted_wg'].mean():.3f} | {g['reliance'].mean():.3f} | "
                           f"{g['interventions_to_target'].notna().sum()}/{len(g)} |")
            out += ["", "| parameters | fraction | target | interventions to target (mean) | samples to target "
                    "(mean) | seeds that reached it |", "|---|---|---|---|---|---|"]
            for (params, fraction), g in need.groupby(["params", "fraction"]):
                hit = g.dropna(subset=["interventions"])
                out.append(f"| {params:,} | {fraction:g} | {g['target'].mean():.3f} | "
                           + (f"{hit['interventions'].mean():,.0f} | {hit['samples'].mean():,.0f}" if len(hit)
                              else "- | -") + f" | {len(hit)}/{len(g)} |")
            fig = dose_figure(online, regime, figures / f"online_dose_{regime}")
            figs += fig
            out += ["", f"![online dose-response {regime}](figures/{fig[0].name})", ""]
    if not continual.empty:
        tol = TOLERANCE["spurious_reliance"]
        out += ["### Continual fine-tuning: reliance on each phase's attribute", "",
                "| regime | parameters | phase | changes | reliance on its attribute (mean) | seeds |",
                "|---|---|---|---|---|---|"]
        for (regime, params, phase), g in continual.groupby(["regime", "params", "phase"]):
            out.append(f"| {regime} | {params:,} | {phase}{' (new attribute)' if g['new'].iloc[0] else ''} | "
                       f"`{g['changes'].iloc[0]}` | {g['reliance'].mean():.3f} | {len(g)} |")
        out.append("")
        for regime, g in continual[continual["new"]].groupby("regime"):
            if g["params"].nunique() < 2:
                word, reason = "inconclusive", "one model size: at least two are needed for a trend"
            else:
                fit = fit_trend(g["params"].to_numpy(), g["reliance"].to_numpy(), tol)
                word, reason = verdict(fit, tol, "parameters")
            claim = {"does not close": "larger models learn the new spurious correlation too",
                     "closes": "with scale it stops learning the new spurious correlation"}.get(word, "undecided")
            out += [f"**{regime}: reliance on the new attribute vs parameters: {word}** ({claim}; {reason}; "
                    f"tolerance {tol:g}).", ""]
    return out, figs
