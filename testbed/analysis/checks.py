"""The report's checks of what its verdicts rest on, each its section's table and a warning the headline repeats:
the reference near the invariant ceiling (an undertrained reference makes every confusion gap unreliable), the
runs' convergence by their recorded criterion, the degenerate runs that predict one class, and the versions of the
code that made the runs."""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from testbed.analysis.collect import along, budget_columns, budget_varies
from testbed.analysis.endpoints import point_key
from testbed.analysis.select import Selected, point_columns

CEILING_SHARE = 0.95  # a reference below 95% of the invariant ceiling is undertrained


@dataclass
class ReferenceCheck:
    """The reference's means at each scale point (`points`: ID and OOD accuracy, the invariant ceiling, the lower
    accuracy's share of it, seeds and unconverged runs; `shown`, the point's axis columns) and, per regime, its
    largest scale point where that share falls under CEILING_SHARE or a run did not converge (`short`)."""
    reference: str
    shown: list[str]
    points: pd.DataFrame
    short: pd.DataFrame

    @property
    def known(self) -> bool:
        """Whether the environments declare their invariant ceiling."""
        return bool(self.points["ceiling"].notna().any())

    @property
    def low(self) -> pd.DataFrame:
        """The scale points where the reference falls short of CEILING_SHARE of the ceiling."""
        return self.points[self.points["share"] < CEILING_SHARE]


def reference_check(runs: pd.DataFrame, reference: str | None, axes: list[str]) -> ReferenceCheck | None:
    """How close the reference came to the invariant ceiling at each scale point; None without a reference."""
    if reference is None:
        return None
    ref = runs[runs["baseline"] == reference].assign(
        ceiling=lambda r: pd.to_numeric(r["ceiling"], errors="coerce") if "ceiling" in r else np.nan)
    key = point_key(ref, axes)
    agg = ref.groupby(key, dropna=False).agg(acc_id=("acc_id", "mean"), acc_avg=("acc_avg", "mean"),
                                             ceiling=("ceiling", "mean"), seeds=("seed", "nunique"),
                                             unconverged=("converged", lambda c: int((c == False).sum())))  # noqa: E712
    agg = agg.reset_index()
    agg["share"] = agg[["acc_id", "acc_avg"]].min(axis=1) / agg["ceiling"]
    centre = along(along(ref, "params"), "n_train")  # every scale at its largest
    short = centre.groupby("regime").apply(lambda g: pd.Series({
        "share": min(g["acc_id"].mean(), g["acc_avg"].mean()) / g["ceiling"].mean(),
        "unconverged": int((g["converged"] == False).sum()), "runs": len(g)}), include_groups=False)  # noqa: E712
    short = short[(short["share"] < CEILING_SHARE) | (short["unconverged"] > 0)]
    return ReferenceCheck(reference, [c for c in key if c not in ("regime", "config")], agg, short)


def reference_lines(check: ReferenceCheck | None) -> list[str]:
    """The Reference check's table."""
    if check is None:
        return ["No reference baseline (Oracle) in this sweep: no reference check."]
    known, shown = check.known, check.shown
    head = ["regime", *shown, f"{check.reference} ID acc.", "OOD acc.", "ceiling", "lower / ceiling",
            "unconverged runs"]
    lines = [] if known else [f"The environments do not declare their invariant ceiling: {check.reference} is only "
                              "checked for convergence.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in check.points.to_dict("records"):
        flag = " **below 95%**" if d["share"] < CEILING_SHARE else ""
        cells = [d["regime"], *(d[c] for c in shown), f"{d['acc_id']:.3f}", f"{d['acc_avg']:.3f}",
                 f"{d['ceiling']:.3f}" if known else "-", f"{d['share']:.2f}{flag}" if known else "-",
                 f"{d['unconverged']} of {d['seeds']}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines


def reference_warning(check: ReferenceCheck | None) -> str | None:
    """A warning if the reference fell short of CEILING_SHARE of the ceiling anywhere, or did not converge."""
    if check is None or (check.low.empty and check.short.empty):
        return None
    if len(check.short):
        where = "; ".join(f"{r}: {d.share:.2f} of the ceiling, {d.unconverged:.0f} of {d.runs:.0f} runs unconverged"
                          for r, d in check.short.iterrows())
        return (f"**Warning: the reference ({check.reference}) is undertrained at the largest scale point ({where}). "
                "Verdicts that rest on it (the confusion gap, the ID guard) are unreliable; see the Reference "
                "check.**")
    worst = check.low.loc[check.low["share"].idxmin()]
    return (f"**Warning: the reference ({check.reference}) reaches {CEILING_SHARE:.0%} of the invariant ceiling at "
            f"the largest scale point, but not at {len(check.low)} of {len(check.points)} scale points (worst: "
            f"{worst['share']:.2f} of it, regime {worst['regime']}): there the confusion gap compares a model "
            "with an invariant one of the same size, data and budget that itself falls short; see the "
            "Reference check.**")


@dataclass
class Convergence:
    """The runs' convergence by their recorded criterion: the cells (a baseline's scale point; `shown`, its axis
    columns) with runs that did not converge, how many did not, how many of those stop at a budget below the
    largest of a swept budget axis (`by_design`), and how many runs are at the largest budget (`uncapped`)."""
    criterion: str
    cells: pd.DataFrame
    shown: list[str]
    unconverged: int
    by_design: int
    uncapped: int
    budget_varies: bool


def convergence(runs: pd.DataFrame, axes: list[str]) -> Convergence | None:
    """The runs' convergence (`Convergence`); None where the runs do not record it (older runs)."""
    if "converged" not in runs or runs["converged"].isna().all():
        return None
    bad = runs[runs["converged"] == False]  # noqa: E712  (None: not recorded)
    capped = pd.Series(False, index=runs.index)
    for col in budget_columns(runs):
        capped |= runs[col] < runs.groupby("regime")[col].transform("max")
    point = point_columns(runs, axes)
    cells = bad.groupby(["regime", *point], dropna=False).agg(
        runs=("seed", "size"), train_acc=("train_acc", "mean")).reset_index()
    return Convergence(bad["criterion"].iloc[0] if len(bad) else "", cells,
                       [c for c in point if c not in ("config", "model")], len(bad),
                       int((capped & (runs["converged"] == False)).sum()), int((~capped).sum()),  # noqa: E712
                       budget_varies(runs))


def undertrained_lines(conv: Convergence | None) -> list[str]:
    """The Undertrained runs section's lines: the cells with unconverged runs, those below the largest budget
    (budget-limited by design) counted apart."""
    if conv is None:
        return ["The runs do not record convergence (older runs): nothing to flag."]
    if not conv.unconverged:
        return ["Every run converged by its recorded criterion."]
    shown = conv.shown
    lines = [f"Criterion: {conv.criterion}.", "", "| regime | " + " | ".join(shown)
             + " | unconverged runs | train acc. |", "|---|" + "---|" * (len(shown) + 2)]
    for r in conv.cells.to_dict("records"):
        lines.append(f"| {r['regime']} | " + " | ".join(str(r[c]) for c in shown) + f" | {r['runs']} | "
                     f"{r['train_acc']:.3f} |")
    if conv.by_design:
        lines += ["", f"{conv.by_design} of them stop at a budget below the largest of the compute axis: the compute "
                  "axis measures budget-limited training by design."]
    return lines


def undertrained_warning(conv: Convergence | None) -> str | None:
    """A warning if runs at the largest budget did not converge."""
    rest = conv.unconverged - conv.by_design if conv else 0
    if not rest:
        return None
    where = " at the largest budget" if conv.budget_varies else ""
    return (f"{rest} of {conv.uncapped} runs{where} did not converge by their criterion (see Undertrained runs): "
            "their points measure the training length as much as the scale.")


def degenerate_lines(sel: Selected) -> list[str]:
    """The chosen draws' runs that predict one class (`testbed.analysis.collect.one_class`), which every fit,
    point, interval and figure leaves out."""
    bad = sel.degenerate
    if bad.empty:
        return ["No run predicts one class (every run with per-group test accuracies was checked)."]
    lines = ["| regime | baseline | parameters | training samples | seed | class predicted | ID acc. | "
             "converged by its criterion |", "|---|---|---|---|---|---|---|---|"]
    for r in bad.sort_values(["regime", "baseline", "params", "seed"]).to_dict("records"):
        conv = {True: "yes", False: "no"}.get(r.get("converged"), "unrecorded")
        lines.append(f"| {r['regime']} | {r['baseline']} | {r['params']:,} | {r['n_train']:,} | {r['seed']} | "
                     f"{r['one_class']:.0f} | {r.get('acc_id', float('nan')):.3f} | {conv} |")
    return lines


def degenerate_warning(sel: Selected) -> str | None:
    """A warning naming how many of the chosen draws' runs are degenerate."""
    bad = sel.degenerate
    if bad.empty:
        return None
    called = int((bad["converged"] == True).sum()) if "converged" in bad else 0  # noqa: E712
    total = len(bad) + len(sel.runs)
    note = (f"; {called} of them {'is' if called == 1 else 'are'} recorded as converged, which a train-loss plateau "
            "cannot tell from a constant predictor") if called else ""
    one = len(bad) == 1
    return (f"**Warning: {len(bad)} of {total} selected runs {'is' if one else 'are'} degenerate: "
            f"{'it predicts' if one else 'they predict'} one class on every test group (ID accuracy at that "
            f"class's prior, reliance 0){note}. {'It is' if one else 'They are'} left out of every fit, point, "
            f"interval and figure, so {'its' if one else 'their'} points have fewer seeds; see Degenerate "
            "runs.**")


def code_warning(runs: pd.DataFrame) -> str | None:
    """A warning when the selected runs come from more than one version of the code (run ids hash configs, so a
    sweep rerun after a change reuses the runs it already has)."""
    counts = runs["code"].value_counts() if "code" in runs else pd.Series(dtype=int)
    if len(counts) < 2:
        return None
    made = ", ".join(f"{n} by `{code}`" for code, n in counts.sort_index().items())
    return (f"**Warning: the selected runs come from {len(counts)} versions of the code ({made}): `testbed sweep "
            "--redo-older` runs the others again with this one.**")
