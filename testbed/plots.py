"""Scaling curves of a sweep, drawn with seaborn: accuracy in and out of distribution against parameters,
data and FLOPs (mean and 95% interval over seeds, hue = baseline, a column per regime), the ID-vs-OOD
scatter, and spurious reliance against scale; for closed-loop environments, the return and crashes against
scale and offline accuracy against return. Each figure is saved as PNG and PDF."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

LABELS = {
    "acc_id": "ID accuracy", "acc_avg": "OOD accuracy", "acc_wg": "worst-group acc. (OOD)",
    "ood_gap": "OOD gap (ID - OOD)", "spurious_reliance": "spurious reliance",
    "causal_sensitivity": "causal sensitivity", "params": "parameters", "n_train": "training samples",
    "flops": "training FLOPs", "return_norm": "closed-loop return / expert's", "crash_rate": "crashes per episode",
}
ACCURACY = ["acc_id", "acc_avg", "acc_wg"]
RELIANCE = ["spurious_reliance", "causal_sensitivity"]
CLOSED_LOOP = ["return_norm", "crash_rate"]


def facet(runs: pd.DataFrame) -> str | None:
    """The column that separates regimes: the swept config files, else the training correlation."""
    for col in ("config", "corr"):
        if col in runs and runs[col].nunique() > 1:
            return col
    return None


def order(runs: pd.DataFrame, col: str | None) -> list | None:
    return sorted(runs[col].unique()) if col else None


def at_largest(runs: pd.DataFrame, col: str, other: str | None) -> pd.DataFrame:
    """Runs at the largest value of `col` (within each regime): the other scale axes held fixed."""
    if other is None:
        return runs[runs[col] == runs[col].max()]
    return runs[runs[col] == runs.groupby(other)[col].transform("max")]


def curves(runs: pd.DataFrame, x: str, metrics: list[str], col: str | None, kind: str = "line") -> sns.FacetGrid:
    metrics = [m for m in metrics if m in runs]
    long = runs.melt(id_vars=[c for c in runs.columns if c not in metrics], value_vars=metrics,
                     var_name="metric", value_name="value")
    long["metric"] = long["metric"].map(LABELS)
    extra = {"errorbar": ("ci", 95), "marker": "o", "err_style": "bars"} if kind == "line" else {"alpha": 0.7}
    grid = sns.relplot(data=long, x=x, y="value", hue="baseline", hue_order=sorted(runs.baseline.unique()),
                       row="metric", col=col, col_order=order(runs, col), kind=kind,
                       height=2.6, aspect=1.3, facet_kws={"sharey": "row", "margin_titles": True}, **extra)
    grid.set(xscale="log")
    for ax in grid.axes.flat:
        ax.xaxis.set_minor_formatter(NullFormatter())  # label decades only: minor labels collide
    grid.set_axis_labels(LABELS[x], "")
    grid.set_titles(row_template="{row_name}", col_template=f"{col} = {{col_name}}" if col else "")
    return grid


def id_vs_ood(runs: pd.DataFrame, col: str | None, y: str = "acc_avg") -> sns.FacetGrid:
    grid = sns.relplot(data=runs, x="acc_id", y=y, hue="baseline", hue_order=sorted(runs.baseline.unique()),
                       size="params", col=col, col_order=order(runs, col),
                       height=3.2, alpha=0.75, facet_kws={"margin_titles": True})
    for ax in grid.axes.flat if y == "acc_avg" else []:  # y = x: no gap
        ax.axline((0.5, 0.5), slope=1, color="gray", linestyle="--", linewidth=1)
    grid.set_axis_labels(LABELS["acc_id"], LABELS[y])
    grid.set_titles(col_template=f"{col} = {{col_name}}" if col else "")
    return grid


def save(grid: sns.FacetGrid, title: str, path: Path) -> list[Path]:
    grid.figure.suptitle(title, y=1.02)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in out:
        grid.figure.savefig(p, bbox_inches="tight", dpi=130)
    plt.close(grid.figure)
    return out


def plot_sweep(sweep_dir: Path, runs: pd.DataFrame) -> list[Path]:
    """The figures of these runs (one row per run, as `testbed.select.selected_runs` gives them)."""
    col = facet(runs)
    figures = sweep_dir / "figures"
    figures.mkdir(exist_ok=True)
    sns.set_theme(style="whitegrid", context="paper")
    paths = []
    if runs["params"].nunique() > 1:
        paths += save(curves(at_largest(runs, "n_train", col), "params", ACCURACY, col),
                      "Accuracy vs model size (largest training set)", figures / "scaling_params")
    if runs["n_train"].nunique() > 1:
        paths += save(curves(at_largest(runs, "params", col), "n_train", ACCURACY, col),
                      "Accuracy vs training-set size (largest model)", figures / "scaling_data")
    paths += save(curves(runs, "flops", ACCURACY, col, kind="scatter"),
                  "Accuracy vs training compute (every run)", figures / "scaling_flops")
    paths += save(id_vs_ood(runs, col), "ID vs OOD accuracy (dashed: y = x)", figures / "id_vs_ood")
    if any(m in runs for m in RELIANCE) and runs["params"].nunique() > 1:
        paths += save(curves(at_largest(runs, "n_train", col), "params", RELIANCE, col),
                      "Counterfactual reliance vs model size", figures / "reliance_params")
    if "return_norm" in runs:
        loop = runs.dropna(subset=["return_norm"])
        for x, held, name in (("params", "n_train", "closed_loop_params"), ("n_train", "params", "closed_loop_data")):
            if loop[x].nunique() > 1:
                paths += save(curves(at_largest(loop, held, col), x, CLOSED_LOOP, col),
                              f"Closed loop vs {LABELS[x]}", figures / name)
        paths += save(id_vs_ood(loop, col, "return_norm"), "Offline action accuracy vs closed-loop return",
                      figures / "offline_vs_closed_loop")
    return paths
