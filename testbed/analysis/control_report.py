"""The report's "Online control" section: how many expert labels DAgger needs, at each policy size, to drive as
well as masked cloning (the Oracle), and whether larger policies need fewer.

- **Dose-response** (`DAgger` runs, swept over `fraction`, the share of visited states the expert labels; 0 is
  behaviour cloning): the final return over the expert's (`test/return_norm`) and crashes per episode against the
  expert labels each run used, one line per policy size.
- **Expert labels to target**: the target is TARGET_SHARE of the Oracle's mean `test/return_norm` at the same
  scale point (the Oracle runs' axis values, e.g. width and regime). A run's expert labels to target are those at
  the first point of its online curve (the policy after each round, on the deployment's test episodes) whose
  return over the expert's reaches it. Each fraction above 0 is fitted on its own (choosing the fewest labels over
  the fractions would pick the dose by its test curve) as `log10(1 + labels)` against parameters, from the runs of
  the draws the report's selection rule chose (the Oracle's included), with the verdict words of the "Online
  training" section
  (`testbed.analysis.online_report.intervention_verdict`). Where the Oracle's mean return over the expert's is not
  positive (it crashes more than it earns: undertrained) there is no target, and that size is left out and said.

Reads run.json and results.json only: no torch, no Lightning.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from testbed.analysis.online_report import TARGET_SHARE, intervention_verdict, oracle_targets, read_runs, regime_of

METRIC = "test/return_norm"


def labels_to_target(curve: list[dict], target: float) -> int | None:
    """Expert labels at the first curve point whose return over the expert's reaches `target`."""
    return next((p["expert_labels"] for p in curve if p.get("return_norm", -np.inf) >= target), None)


def dagger_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The DAgger runs with their regime, fraction, expert labels, final closed-loop endpoints, target and labels
    to target."""
    dagger = runs[runs["baseline"] == "DAgger"].copy()
    if dagger.empty:
        return dagger
    point, targets = oracle_targets(runs, dagger, METRIC)
    metric = lambda key: dagger["results"].map(lambda r: r["metrics"].get(key, np.nan))  # noqa: E731
    dagger["regime"] = regime_of(dagger)
    dagger["fraction"] = dagger["results"].map(lambda r: r["dagger"]["fraction"])
    dagger["expert_labels"] = dagger["results"].map(lambda r: r["dagger"]["expert_labels"])
    dagger["return_norm"], dagger["crash_rate"] = metric(METRIC), metric("test/crash_rate")
    dagger["reliance"] = metric("test/spurious_reliance")
    target = [targets.get(tuple(str(row[c]) for c in point), np.nan) for _, row in dagger.iterrows()]
    dagger["target"] = [t if t > 0 else np.nan for t in target]  # an Oracle that does not drive sets no target
    dagger["labels_to_target"] = [labels_to_target(r["dagger"]["curve"], t) if np.isfinite(t) else None
                                  for r, t in zip(dagger["results"], dagger["target"])]
    dagger["labels_to_target"] = dagger["labels_to_target"].astype(float)
    return dagger


def labels_needed(dagger: pd.DataFrame) -> pd.DataFrame:
    """Per regime, fraction, policy size and seed: the expert labels to target (NaN where it was not reached);
    fractions are never pooled."""
    return dagger.groupby(["regime", "fraction", "params", "seed"], as_index=False).agg(
        expert_labels=("labels_to_target", "mean"), target=("target", "mean"))


def control_figure(dagger: pd.DataFrame, regime: str, path: Path) -> list[Path]:
    """Return over the expert's and crashes per episode against expert labels, one line per policy size."""
    import matplotlib.pyplot as plt

    from testbed.analysis.fit_plots import save

    sub = dagger[dagger["regime"] == regime]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    sizes = sorted(sub["params"].unique())
    cmap = plt.get_cmap("viridis")
    for i, params in enumerate(sizes):
        at = sub[sub["params"] == params]
        mean = at.groupby("fraction")[["expert_labels", "return_norm", "crash_rate"]].mean()
        colour = cmap(i / max(1, len(sizes) - 1))
        for ax, col in zip(axes, ("return_norm", "crash_rate")):
            ax.plot(mean["expert_labels"], mean[col], "o-", color=colour, label=f"{params:,} params")
        if np.isfinite(at["target"].mean()):
            axes[0].axhline(at["target"].mean(), color=colour, ls=":", lw=1)
    positive = sub.loc[sub["expert_labels"] > 0, "expert_labels"]
    low = int(np.floor(np.log10(positive.min()))) if len(positive) else 0
    high = int(np.ceil(np.log10(positive.max()))) if len(positive) else 1
    for ax, label in zip(axes, ("return / expert's return", "crashes per episode")):
        ax.set_xscale("symlog", linthresh=10.0**low, linscale=0.5)  # behaviour cloning (0) sits apart
        ax.set_xticks([0, *(10.0**k for k in range(low, high + 1))])
        ax.set_xlim(-0.5 * 10.0**low, 10.0**high)
        ax.set_xlabel("expert labels (symlog; 0 = behaviour cloning)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(bottom=0)
    axes[0].legend(fontsize=8, title="policy size", title_fontsize=8)
    fig.suptitle(f"DAgger dose-response, regime {regime} (final policy, mean over seeds; dotted: target, "
                 f"{TARGET_SHARE:.0%} of the Oracle's)", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def control_section(sweep_dir: Path, figures: Path, all_runs: bool = False,
                    keep: set[str] | None = None) -> tuple[list[str], list[Path]]:
    """The section's lines and figures, from the runs in `keep` (the selected runs' ids; all if None); none if
    the sweep has no DAgger runs."""
    runs = read_runs(sweep_dir, all_runs, keep)
    dagger = dagger_table(runs) if not runs.empty else runs
    if dagger.empty:
        return [], []
    out = ["How many expert labels does DAgger need, at each policy size, to drive as well as masked cloning (the "
           "Oracle), and do larger policies need fewer? (Criteria: `testbed.analysis.control_report`.)", "",
           f"Target: {TARGET_SHARE:.0%} of the Oracle's return over the expert's at the same scale point"
           + ("." if dagger["target"].notna().any() else "; **the sweep has no Oracle runs at these scale points, "
              "so no target can be resolved**."), ""]
    figs = []
    for regime in sorted(dagger["regime"].unique()):
        sub = dagger[dagger["regime"] == regime]
        untargeted = sorted(sub.loc[sub["target"].isna(), "params"].unique())
        need = labels_needed(sub[sub["target"].notna()])
        note = (f"; no target at {', '.join(f'{p:,}' for p in untargeted)} parameters, where the Oracle's return over "
                "the expert's is not positive (or the Oracle is missing)") if untargeted else ""
        out += [f"### Regime {regime}", ""]
        for fraction, at in need[need["fraction"] > 0].groupby("fraction"):
            word, reason, _ = intervention_verdict(at, "expert_labels")
            out += [f"**DAgger(fraction={fraction:g}): expert labels to target vs parameters: {word}** "
                    f"({reason}{note}).", ""]
        out += ["| parameters | seeds | fraction | expert labels | return / expert's | crashes per episode | "
                "reliance | reached target |", "|---|---|---|---|---|---|---|---|"]
        for (params, fraction), g in sub.groupby(["params", "fraction"]):
            out.append(f"| {params:,} | {len(g)} | {fraction:g} | {g['expert_labels'].mean():,.0f} | "
                       f"{g['return_norm'].mean():.3f} | {g['crash_rate'].mean():.2f} | {g['reliance'].mean():.3f} | "
                       f"{g['labels_to_target'].notna().sum()}/{len(g)} |")
        out += ["", "| parameters | fraction | target | expert labels to target (mean) | seeds that reached it |",
                "|---|---|---|---|---|"]
        for (params, fraction), g in need.groupby(["params", "fraction"]):
            hit = g["expert_labels"].dropna()
            out.append(f"| {params:,} | {fraction:g} | {g['target'].mean():.3f} | "
                       + (f"{hit.mean():,.0f}" if len(hit) else "-") + f" | {len(hit)}/{len(g)} |")
        fig = control_figure(dagger, regime, figures / f"control_dose_{regime}")
        figs += fig
        out += ["", f"![DAgger dose-response {regime}](figures/{fig[0].name})", ""]
    return out, figs
