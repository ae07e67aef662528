"""The report's figures that carry fits: the headline (endpoints against scale with the fitted curves, their
extrapolation dashed), accuracy on the line on probit axes, and probe vs head worst-group accuracy."""

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats as sstats  # noqa: E402

from testbed.analysis.endpoints import BOUNDS, TOLERANCE, WHAT  # noqa: E402
from testbed.analysis.fits import MIN_POINTS, MIN_SEEDS, Fit  # noqa: E402
from testbed.analysis.line import Line, probit  # noqa: E402

AXIS_LABELS = {"params": "parameters (log scale)", "n_train": "training samples (log scale)",
               "flops": "training FLOPs (log scale)"}
PROBIT_TICKS = [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]


def colours(baselines: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {b: cmap(i % 10) for i, b in enumerate(baselines)}


def save(fig: plt.Figure, path: Path) -> list[Path]:
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in out:
        fig.savefig(p, bbox_inches="tight", dpi=130)
    plt.close(fig)
    return out


def grid(rows: int, cols: int) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.2 * cols, 6.5), 3.2 * rows), squeeze=False, sharex="col")
    return fig, axes


def t_bars(values: pd.Series, bounds: tuple[float, float]) -> tuple[float, float, float]:
    """Mean, and the distances down and up to the ends of its 95% t interval held inside `bounds`: the one
    interval convention of every figure (`plots.t_interval`)."""
    n, mean = len(values), float(values.mean())
    half = sstats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
    low, high = np.clip([mean - half, mean + half], *bounds)
    return mean, mean - low, high - mean


def headline(runs: pd.DataFrame, fits: dict[tuple, Fit], metrics: list[str], axis: str, path: Path) -> list[Path]:
    """Each metric (a row) against `axis` per regime (a column): mean over seeds per baseline with its 95% t
    interval held in the endpoint's bounds, the fitted curve (also held in them) solid over the measured range
    and dashed up to the projection horizon (one measured span past the largest scale), and the tolerance
    dotted."""
    regimes = sorted(runs["regime"].unique())
    colour = colours(sorted(runs["baseline"].unique()))
    fig, axes = grid(len(metrics), len(regimes))
    for i, metric in enumerate(metrics):
        for j, regime in enumerate(regimes):
            ax = axes[i, j]
            for baseline, group in runs[runs["regime"] == regime].groupby("baseline"):
                points = group.dropna(subset=[metric]).groupby(axis)[metric]
                if not len(points):
                    continue
                xs = np.array(list(points.groups))
                bars = np.array([t_bars(v, BOUNDS[metric]) for _, v in points])
                stats = pd.DataFrame({axis: xs, "mean": bars[:, 0]})
                ax.errorbar(xs, bars[:, 0], yerr=bars[:, 1:].T, fmt="o", ms=4, capsize=2, color=colour[baseline],
                            label=baseline)
                fit = fits.get((regime, baseline, axis, metric))
                if fit is None or fit.points < MIN_POINTS or fit.seeds < MIN_SEEDS:  # no fit is claimed
                    ax.plot(stats[axis], stats["mean"], color=colour[baseline], lw=0.8, alpha=0.4)
                else:
                    inside = np.geomspace(fit.x_min, fit.x_max, 50)
                    ax.plot(inside, fit.predict(inside), color=colour[baseline], lw=1.2)
                    beyond = np.geomspace(fit.x_max, fit.horizon, 50)
                    ax.plot(beyond, fit.predict(beyond), color=colour[baseline], lw=1.2, ls="--")
            ax.axhline(TOLERANCE[metric], color="gray", ls=":", lw=1)
            ax.set_xscale("log")
            ax.set_title(f"regime: {regime}" if i == 0 else "")
            ax.set_xlabel(AXIS_LABELS[axis] if i == len(metrics) - 1 else "")
            ax.set_ylabel(textwrap.fill(WHAT[metric], 32) if j == 0 else "", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), bbox_to_anchor=(0.5, 1.0),
               title="points: mean over seeds, bars: 95% t interval held in bounds; lines: the fit where one is "
                     "claimed\n(dashed: projected), else faint; dotted: tolerance",
               title_fontsize=8, fontsize=8)
    return save(fig, path)


def line_figure(runs: pd.DataFrame, lines: list[Line], path: Path) -> list[Path]:
    """Every run on probit axes (ticks in accuracy), the ERM line per regime, and y = x."""
    regimes = [line.regime for line in lines]
    colour = colours(sorted(runs["baseline"].unique()))
    fig, axes = plt.subplots(1, len(regimes), figsize=(4.2 * len(regimes), 3.8), squeeze=False)
    ticks = probit(np.array(PROBIT_TICKS))
    for ax, line in zip(axes[0], lines):
        sub = runs[runs["regime"].astype(str) == line.regime].dropna(subset=["acc_id", "acc_avg"])
        for baseline, group in sub.groupby("baseline"):
            ax.scatter(probit(group["acc_id"]), probit(group["acc_avg"]), s=12, alpha=0.7, color=colour[baseline],
                       label=baseline)
        xs = np.linspace(ticks[0], ticks[-1], 20)
        ax.plot(xs, line.intercept + line.slope * xs, color="black", lw=1.2,
                label=f"ERM line (R² = {line.r2:.2f})")
        ax.plot(xs, xs, color="gray", ls="--", lw=1, label="y = x")
        for setter, limits in ((ax.set_xticks, ax.set_xlim), (ax.set_yticks, ax.set_ylim)):
            setter(ticks, [f"{t:g}" for t in PROBIT_TICKS])
            limits(ticks[0] - 0.2, ticks[-1] + 0.2)
        ax.set_title(f"regime: {line.regime}")
        ax.set_xlabel("ID accuracy (probit scale)")
        ax.set_ylabel("OOD accuracy (probit scale)")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save(fig, path)


def probe_axes(runs: pd.DataFrame, axis: str) -> plt.Figure:
    """OOD worst-group accuracy of the trained head (solid) and of a fresh group-balanced linear probe on the
    frozen features (dashed) against scale, per regime: mean over seeds with its 95% t interval held in [0, 1]
    (`t_bars`, as in every figure)."""
    regimes = sorted(runs["regime"].unique())
    colour = colours(sorted(runs["baseline"].unique()))
    fig, axes = plt.subplots(1, len(regimes), figsize=(4.2 * len(regimes), 3.2), squeeze=False, sharey=True)
    for ax, regime in zip(axes[0], regimes):
        for baseline, group in runs[runs["regime"] == regime].groupby("baseline"):
            for metric, fmt, what in (("acc_wg", "o-", "head"), ("probe/acc_wg", "s--", "probe")):
                points = group.dropna(subset=[metric]).groupby(axis)[metric]
                if not len(points):
                    continue
                bars = np.array([t_bars(v, (0.0, 1.0)) for _, v in points])
                ax.errorbar(list(points.groups), bars[:, 0], yerr=bars[:, 1:].T, fmt=fmt, ms=3, capsize=2,
                            color=colour[baseline], label=f"{baseline} {what}")
        ax.set_xscale("log")
        ax.set_title(f"regime: {regime}")
        ax.set_xlabel(AXIS_LABELS[axis])
    axes[0, 0].set_ylabel("OOD worst-group accuracy")
    axes[0, -1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left",
                       title="mean over seeds,\nbars: 95% t interval\nheld in [0, 1]", title_fontsize=7)
    fig.tight_layout()
    return fig


def probe_figure(runs: pd.DataFrame, axis: str, path: Path) -> list[Path]:
    """The probe-vs-head figure (`probe_axes`), saved as PNG and PDF."""
    return save(probe_axes(runs, axis), path)
