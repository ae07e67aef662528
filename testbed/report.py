"""The verdict: does the out-of-distribution gap close as scale grows?

For each regime, baseline and scale axis, fit `gap = a + b * log10(scale)` by least squares, with a 95%
bootstrap interval for the slope `b` (runs are resampled with replacement among the seeds at each scale
point, so the interval reflects seed-to-seed variation). The verdict:

- **closes**: the gap shrinks by more than TOL per decade of scale (the interval's upper end is below -TOL),
  or it is already below EPS at the largest scale (the interval of its mean there is below EPS);
- **does not close**: the slope is credibly above -TOL (the interval's lower end is above -TOL): the gap
  shrinks by less than TOL per decade, or grows;
- **inconclusive**: otherwise; more seeds or a wider range of scales would tell.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from testbed.collect import collect, save_table, wide
from testbed.plots import LABELS, at_largest, facet, plot_sweep
from testbed.results import write_atomic

TOL = 0.01  # one accuracy point per tenfold increase in scale
EPS = 0.02  # a gap under two points counts as closed
BOOTSTRAP = 2000
ERROR_WORDS = {"closes": "falls", "does not close": "does not fall"}  # the same criterion, applied to OOD error
# What each fitted metric is, and the words for its verdicts.
METRICS = {"ood_gap": ("OOD gap", {}), "ood_error": ("OOD error", ERROR_WORDS),
           "return_shortfall": ("Closed-loop return shortfall", ERROR_WORDS)}


@dataclass
class Trend:
    slope: float  # change of the metric per decade of scale
    low: float
    high: float
    first: float  # mean metric at the smallest and the largest scale
    last: float
    last_high: float  # upper end of the interval of the mean at the largest scale
    points: int
    verdict: str


def fit_trend(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Trend:
    """Least-squares slope of y against log10(x), with a bootstrap over the seeds at each x."""
    logx = np.log10(np.asarray(x, dtype=float))
    y = np.asarray(y, dtype=float)
    levels = np.unique(logx)
    groups = [np.flatnonzero(logx == v) for v in levels]
    rng = np.random.default_rng(seed)
    slopes, lasts = np.empty(BOOTSTRAP), np.empty(BOOTSTRAP)
    for i in range(BOOTSTRAP):
        idx = np.concatenate([rng.choice(g, len(g)) for g in groups])
        slopes[i] = np.polyfit(logx[idx], y[idx], 1)[0]
        lasts[i] = y[rng.choice(groups[-1], len(groups[-1]))].mean()
    slope = np.polyfit(logx, y, 1)[0]
    low, high = np.percentile(slopes, [2.5, 97.5])
    last_high = np.percentile(lasts, 97.5)
    if high < -TOL or last_high < EPS:
        verdict = "closes"
    elif low > -TOL:
        verdict = "does not close"
    else:
        verdict = "inconclusive"
    return Trend(slope, low, high, y[groups[0]].mean(), y[groups[-1]].mean(), last_high, len(levels), verdict)


def trends(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """A trend per regime, baseline and scale axis (the other axes held at their largest value)."""
    col = facet(runs)
    views = {"params": at_largest(runs, "n_train", col), "n_train": at_largest(runs, "params", col), "flops": runs}
    runs, rows = runs.dropna(subset=[metric]), []
    for axis, view in views.items():
        for keys, group in view.groupby([c for c in (col, "baseline") if c]):
            if group[axis].nunique() < 2:
                continue
            regime, baseline = (keys if col else ("all", *keys))
            rows.append({"axis": axis, "regime": regime, "baseline": baseline, "metric": metric,
                         **asdict(fit_trend(group[axis].to_numpy(), group[metric].to_numpy()))})
    return pd.DataFrame(rows)


def table(fits: pd.DataFrame, words: dict[str, str]) -> str:
    lines = ["| regime | baseline | scale points | at smallest | at largest | slope per decade [95% CI] | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in fits.itertuples():
        lines.append(f"| {r.regime} | {r.baseline} | {r.points} | {r.first:.3f} | {r.last:.3f} | "
                     f"{r.slope:+.3f} [{r.low:+.3f}, {r.high:+.3f}] | **{words.get(r.verdict, r.verdict)}** |")
    return "\n".join(lines)


def write_report(sweep_dir: Path) -> Path:
    table_ = collect(sweep_dir)
    save_table(table_, sweep_dir)
    runs = wide(table_)
    runs["ood_error"] = 1 - runs["acc_avg"]
    closed_loop = "return_norm" in runs
    if closed_loop:
        runs["return_shortfall"] = 1 - runs["return_norm"]
    figures = [p for p in plot_sweep(sweep_dir) if p.suffix == ".png"]
    fits = pd.concat([trends(runs, m) for m in METRICS if m in runs], ignore_index=True)
    write_atomic(sweep_dir / "fits.csv", fits.to_csv(index=False))
    seeds = runs["seed"].nunique()
    out = [f"# Scaling report: {runs['sweep'].iloc[0]}", "",
           f"{len(runs)} runs: baselines {', '.join(sorted(runs['baseline'].unique()))}; "
           f"{runs['params'].nunique()} model sizes ({runs['params'].min():,} to {runs['params'].max():,} parameters), "
           f"{runs['n_train'].nunique()} training-set sizes ({runs['n_train'].min():,} to {runs['n_train'].max():,}), "
           f"{seeds} seeds. `ood_gap` = ID accuracy - OOD accuracy (pooled shifted environments).", ""]
    if closed_loop:
        out += ["Closed-loop runs: ID accuracy is the offline action accuracy on held-out demonstrations, OOD accuracy "
                "the action accuracy on the states the policy itself visits, and the return shortfall is "
                "1 - closed-loop return / the expert's return on the same episodes.", ""]
    out += ["## Criterion", "", __doc__.split("\n\n", 1)[1].strip().replace("TOL", f"{TOL}").replace("EPS", f"{EPS}"),
            ""]
    if seeds < 3:
        out += [f"With {seeds} seed(s), the intervals are rough: use more seeds before trusting a verdict.", ""]
    for axis in ("params", "n_train", "flops"):
        for metric, (what, words) in METRICS.items():
            sub = fits[(fits.axis == axis) & (fits.metric == metric)] if len(fits) else fits
            if len(sub):
                held = {"params": "at the largest training set", "n_train": "at the largest model",
                        "flops": "over every run"}[axis]
                out += [f"## {what} vs {LABELS[axis]} ({held})", "", table(sub, words), ""]
    out += ["## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures] + [""]
    path = sweep_dir / "report.md"
    write_atomic(path, "\n".join(out))
    return path
