"""Scaling curves of a sweep, drawn with seaborn: accuracy in and out of distribution against parameters,
data and FLOPs (mean and 95% interval over seeds, hue = baseline, a column per regime), the ID-vs-OOD
scatter, and spurious reliance against scale; for closed-loop environments, the return and crashes against
scale and offline accuracy against return. Each figure is saved as PNG and PDF."""

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, LogLocator, NullFormatter  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402
from scipy import stats  # noqa: E402

from testbed.analysis.collect import along, budget_columns, budget_varies  # noqa: E402

LABELS = {
    "acc_id": "ID accuracy", "acc_avg": "OOD accuracy (pooled)", "acc_wg": "worst-group acc. (OOD)",
    "acc_reversed": "OOD accuracy, reversed env", "ood_gap": "OOD gap (ID - OOD)",
    "spurious_reliance": "spurious reliance", "causal_sensitivity": "causal sensitivity", "params": "parameters",
    "n_train": "training samples", "flops": "training FLOPs", "return_norm": "closed-loop return / expert's",
    "crash_rate": "crashes per episode",
}
ACCURACY = ["acc_id", "acc_avg", "acc_reversed", "acc_wg"]
RELIANCE = ["spurious_reliance", "causal_sensitivity"]
CLOSED_LOOP = ["return_norm", "crash_rate"]
SCALES = ["params", "n_train"]  # the scale axes a figure may hold fixed


def facet(runs: pd.DataFrame) -> str | None:
    """The column that separates conditions, where there are several: the `regime` that selection gives each run
    (`testbed.analysis.collect.condition`), so that a figure splits exactly what the verdicts split."""
    return "regime" if "regime" in runs and runs["regime"].nunique() > 1 else None


def order(runs: pd.DataFrame, col: str | None) -> list | None:
    return sorted(runs[col].unique()) if col else None


def number(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:.3g}"


def held_fixed(runs: pd.DataFrame, x: str, col: str | None) -> str:
    """Which scale axes a figure holds fixed (constant within each regime) and at what value."""
    held = []
    for axis in [a for a in [*SCALES, *budget_columns(runs)] if a != x and a in runs]:
        per = runs.groupby(col)[axis].nunique() if col else pd.Series([runs[axis].nunique()])
        if (per == 1).all():
            values = sorted(runs[axis].unique())
            held.append(f"{LABELS.get(axis, axis)} = {' / '.join(number(v) for v in values)}"
                        + (" (the largest)" if len(values) == 1 else f" (the largest of each {col})"))
    return "Held fixed: " + ("; ".join(held) if held else "nothing (every run)")


def log_axis(ax: plt.Axes, low: float, high: float) -> None:
    """A log x axis over [low, high] with a labelled tick at every decade and minor ticks at 2 to 9 times each.
    Fewer than two decades in view: widen to the nearer decade if it costs at most a third of one, else label the
    minor ticks at 2 and 5 too."""
    ax.set_xscale("log")
    lo, hi = math.log10(low) - 0.1, math.log10(high) + 0.1  # the outermost points and labels stay off the frame
    if math.floor(hi) - math.ceil(lo) + 1 < 2:
        below, above = math.ceil(lo) - 1, math.floor(hi) + 1
        if min(lo - below, above - hi) <= 1 / 3:
            lo, hi = (below - 0.03, hi) if lo - below <= above - hi else (lo, above + 0.03)
    ax.set_xlim(10 ** lo, 10 ** hi)
    few = math.floor(hi) - math.ceil(lo) + 1 < 2
    scale = ax.xaxis
    scale.set_major_locator(LogLocator(base=10, numticks=20))
    scale.set_major_formatter(LogFormatterSciNotation(base=10))
    scale.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10)), numticks=20))
    scale.set_minor_formatter(FuncFormatter(minor_label) if few else NullFormatter())
    ax.tick_params(axis="x", which="minor", length=2.5, width=0.6, labelsize="small", bottom=True)
    ax.tick_params(axis="x", which="major", length=4, bottom=True)


def minor_label(v: float, _: int) -> str:
    """`2×10³` and `5×10³` on a short log axis; nothing at the other minor ticks."""
    exponent = math.floor(math.log10(v) + 1e-9)
    mantissa = round(v / 10 ** exponent)
    return rf"$\mathdefault{{{mantissa}\times10^{{{exponent}}}}}$" if mantissa in (2, 5) else ""


def label_facets(grid: sns.FacetGrid, col: str | None, rows: bool) -> None:
    """Regime names above the top panels; with a row per metric, the metric as the left panels' y label (no
    margin titles on the right, where they would collide with the legend)."""
    grid.set_titles(template="")
    for j, name in enumerate(grid.col_names or []):
        grid.axes[0, j].set_title(f"{col} = {name}", fontsize=9)
    for i, name in enumerate(grid.row_names if rows else []):
        grid.axes[i, 0].set_ylabel(name.replace(", ", ",\n").replace(" (", "\n("))


def legend_below(grid: sns.FacetGrid) -> None:
    if grid.legend is not None:
        sns.move_legend(grid, "upper center", bbox_to_anchor=(0.5, 0.0), ncol=8, frameon=False, title=None)


def t_interval(values: pd.Series, bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float]:
    """The 95% t interval of a mean, held inside `bounds` (an accuracy's interval ends at 0 and 1): honest at
    three seeds, where a percentile bootstrap is far too narrow (and no faster to draw)."""
    n, mean = len(values), values.mean()
    if n < 2:
        return mean, mean
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return max(mean - half, bounds[0]), min(mean + half, bounds[1])


def curves(runs: pd.DataFrame, x: str, metrics: list[str], col: str | None, kind: str = "line",
           bounds: tuple[float, float] | None = (0.0, 1.0)) -> sns.FacetGrid:
    """`metrics` against `x`, a row each; `bounds`: where they all live (None: unbounded, as a return)."""
    metrics = [m for m in metrics if m in runs and runs[m].notna().any()]
    long = runs.melt(id_vars=[c for c in runs.columns if c not in metrics], value_vars=metrics,
                     var_name="metric", value_name="value")
    labels = dict(LABELS)
    if "reversed_corr" in runs and runs.reversed_corr.nunique() == 1:
        labels["acc_reversed"] += f" (corr={runs.reversed_corr.iloc[0]:.2f})"
    long["metric"] = long["metric"].map(labels)
    lo, hi = bounds or (-math.inf, math.inf)
    extra = ({"errorbar": lambda v: t_interval(v, (lo, hi)), "marker": "o", "err_style": "bars"} if kind == "line"
             else {"alpha": 0.7})
    grid = sns.relplot(data=long, x=x, y="value", hue="baseline", hue_order=sorted(runs.baseline.unique()),
                       row="metric", row_order=[labels[m] for m in metrics], col=col, col_order=order(runs, col),
                       kind=kind, height=2.4, aspect=1.35, facet_kws={"sharey": "row", "margin_titles": False},
                       **extra)
    grid.set_axis_labels(LABELS[x], "")
    for ax in grid.axes.flat:
        log_axis(ax, runs[x].min(), runs[x].max())
    label_facets(grid, col, rows=True)
    legend_below(grid)
    if kind == "line":
        groups = runs.groupby([x, "baseline"] + ([col] if col else [])).size()
        n = f"{groups.min()}" if groups.min() == groups.max() else f"{groups.min()} to {groups.max()}"
        held = f", held in [{lo:g}, {hi:g}]" if bounds else ""
        bars = f"Points: mean over the {n} runs (seeds) at each size; bars: 95% t interval of that mean{held}"
    else:
        bars = "Each point is one run"
    grid.caption = f"{held_fixed(runs, x, col)}. {bars}."
    return grid


def short(v: float) -> str:
    """A count as a legend reads it: 76, 818, 20.9k, 1.1M, 3.4B."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def count_labels(values: pd.Series) -> dict[float, str]:
    """Each distinct count's legend label (`short`), in increasing order; full digits where two would read alike."""
    labels = {v: short(v) for v in sorted(values.unique())}
    return labels if len(set(labels.values())) == len(labels) else {v: f"{v:,.0f}" for v in labels}


MARKER_AREA = (15.0, 200.0)  # points^2 of the smallest and the largest model's markers


def marker_areas(params: pd.Series) -> dict[str, float]:
    """Each model size's marker area, by its label: linear in log parameters between MARKER_AREA, so that sizes
    a decade apart look a decade apart (linear in parameters, 76 and 20,866 both look small next to a million)."""
    labels = count_labels(params)
    low, high = math.log10(min(labels)), math.log10(max(labels))
    return {label: MARKER_AREA[0] + ((math.log10(p) - low) / (high - low) if high > low else 1.0)
            * (MARKER_AREA[1] - MARKER_AREA[0]) for p, label in labels.items()}


def id_vs_ood(runs: pd.DataFrame, col: str | None, y: str = "acc_avg") -> sns.FacetGrid:
    """One point per run: colour the baseline, size the model (area linear in log parameters), marker the
    training-set size; the legend reads the counts in k and M."""
    areas, data_labels = marker_areas(runs["params"]), count_labels(runs["n_train"])
    data = runs.assign(**{LABELS["params"]: runs["params"].map(count_labels(runs["params"])),
                          LABELS["n_train"]: runs["n_train"].map(data_labels)})
    grid = sns.relplot(data=data, x="acc_id", y=y, hue="baseline", hue_order=sorted(runs.baseline.unique()),
                       size=LABELS["params"], sizes=areas, size_order=list(areas), style=LABELS["n_train"],
                       style_order=list(data_labels.values()), col=col, col_order=order(runs, col), height=3.2,
                       alpha=0.75, facet_kws={"margin_titles": False})
    for ax in grid.axes.flat if y == "acc_avg" else []:  # y = x: no gap
        ax.axline((0.5, 0.5), slope=1, color="gray", linestyle="--", linewidth=1)
    grid.set_axis_labels(LABELS["acc_id"], LABELS[y])
    label_facets(grid, col, rows=False)
    dashed = "; dashed: y = x (no OOD gap)" if y == "acc_avg" else ""
    grid.caption = (f"Held fixed: nothing (every run). Each point is one run{dashed}; marker area grows with "
                    "log parameters.")
    return grid


def save(grid: sns.FacetGrid, title: str, path: Path) -> list[Path]:
    """Title and, under it, the caption (what is held fixed, what the points and bars are), above the panels."""
    fig = grid.figure
    width = int(fig.get_figwidth() * 15)  # characters of 8-point text per line across the figure
    caption = textwrap.fill(getattr(grid, "caption", ""), max(width, 60))
    lines = caption.count("\n") + 1 if caption else 0
    for text, y, size, colour in ((caption, 6, 8, "dimgray"), (title, 10 + 10 * lines, 11, "black")):
        fig.text(0.5, 1.0, text, transform=offset_copy(fig.transFigure, fig=fig, y=y, units="points"),
                 ha="center", va="bottom", fontsize=size, color=colour)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in out:
        fig.savefig(p, bbox_inches="tight", dpi=130)
    plt.close(fig)
    return out


def plot_sweep(sweep_dir: Path, runs: pd.DataFrame) -> list[Path]:
    """The figures of these runs (one row per run, as `testbed.analysis.select.selected_runs` gives them)."""
    col = facet(runs)
    figures = sweep_dir / "figures"
    figures.mkdir(exist_ok=True)
    sns.set_theme(style="whitegrid", context="paper")
    paths = []
    if runs["params"].nunique() > 1:
        paths += save(curves(along(runs, "params", col), "params", ACCURACY, col),
                      "Accuracy vs model size (largest training set)", figures / "scaling_params")
    if runs["n_train"].nunique() > 1:
        paths += save(curves(along(runs, "n_train", col), "n_train", ACCURACY, col),
                      "Accuracy vs training-set size (largest model)", figures / "scaling_data")
    if budget_varies(runs):  # else FLOPs follow the model and the data, drawn above
        paths += save(curves(runs, "flops", ACCURACY, col, kind="scatter"),
                      "Accuracy vs training compute (every run)", figures / "scaling_flops")
    paths += save(id_vs_ood(runs, col), "ID vs OOD accuracy", figures / "id_vs_ood")
    if any(m in runs for m in RELIANCE) and runs["params"].nunique() > 1:
        paths += save(curves(along(runs, "params", col), "params", RELIANCE, col),
                      "Counterfactual reliance vs model size", figures / "reliance_params")
    if "return_norm" in runs:
        loop = runs.dropna(subset=["return_norm"])
        for x, name in (("params", "closed_loop_params"), ("n_train", "closed_loop_data")):
            if loop[x].nunique() > 1:
                paths += save(curves(along(loop, x, col), x, CLOSED_LOOP, col, bounds=None),
                              f"Closed loop vs {LABELS[x]}", figures / name)
        paths += save(id_vs_ood(loop, col, "return_norm"), "Offline action accuracy vs closed-loop return",
                      figures / "offline_vs_closed_loop")
    return paths
