"""The verdict: as scale grows, does a model stop relying on the spurious attribute?

Each endpoint (the confusion gap, spurious reliance, and where they exist the closed-loop return shortfall
and the probe's confusion gap) is fitted against each scale axis per regime and baseline, the other scales
held at their largest (`along`): parameters, training samples, and FLOPs as the compute budget varies. Both
the log-linear trend and the saturating power law `m(N) = m_inf + A N^-alpha` are fitted; AICc picks one
for the point estimates; intervals are CONFIDENCE bootstrap intervals over seeds in which every replicate refits both
forms and picks its own by AICc (`testbed.analysis.fits`). Not carried by the intervals: seeds are resampled
independently at each scale point, and the selection of the hyperparameter draw is taken as given when it is
made per point (`--select-per seed`, DomainBed's protocol, puts its noise into the spread). The tolerance is
the nominal one (TOLERANCES) or, if larger, the standard error of a mean
at one scale point (the pooled within-point s.d. over the root of the seeds); the reason gives the effective
one. Fits, intervals and drawn lines are held in the endpoint's bounds ([0, 1] for reliance, [-1, 1] for
gaps and shortfalls). The verdict words, used everywhere in the report:

- **closes**: at the largest measured scale, the interval of the endpoint's mean, or of the fitted curve
  there (over the forms' replicates), lies under the tolerance: a measured claim, never a projection;
- **projected to close**: not yet under the tolerance at the largest measured scale, but the fitted curve
  crosses it at a closing scale whose interval ends at most one measured span (as many decades as measured)
  past the largest measured scale: "projected to close at about 3e+06 parameters [2e+06, 5e+06]"; a sweep to
  that scale would decide;
- **does not close**: a statement about the measured range: at the largest measured scale both intervals lie
  above the tolerance, and the curve credibly rises, or levels off (the power law is the chosen form and its
  `m_inf` interval lies above the tolerance), or does not credibly fall (the slope's interval reaches 0);
  what lies past the range is not claimed;
- **collapses**: the ID guard: at the largest scale the baseline's mean ID accuracy is more than ID_TOL below
  the lower of the reference's (same scale points and seeds) and the invariant ceiling, where known (no bar, no
  guard); a gap that shrinks because the model got worse in distribution is not a gap closing, whatever the fit
  says. A fall from the spurious optimum to the invariant ceiling is not a collapse
  (with too few scale points or seeds the verdict stays inconclusive, and the reason names the guard);
- **inconclusive**: fewer than MIN_POINTS scale points or MIN_SEEDS seeds per point (no verdict is given from
  fewer), or none of the above: a falling curve whose crossing lies past one measured span, or intervals that
  straddle the tolerance; the reason says what would decide (more seeds, a sweep to a named scale);
- **reference**: the reference baseline's own confusion gap, 0 by construction.

`benchmarks/verdicts.py` measures how often each word is wrong on simulated sweeps of known truth
(`benchmarks/README.md`).
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from testbed.analysis.checks import (
    Convergence,
    ReferenceCheck,
    code_warning,
    convergence,
    degenerate_lines,
    degenerate_warning,
    reference_check,
    reference_lines,
    reference_warning,
    undertrained_lines,
    undertrained_warning,
)
from testbed.analysis.collect import along, budget_varies
from testbed.analysis.continual import Continual, continual_lines, continual_numbers
from testbed.analysis.dose import CONTROL, ONLINE, DoseNumbers, dose_figures, dose_lines, dose_numbers
from testbed.analysis.endpoints import (
    BOUNDS,
    ID_TOL,
    TOLERANCE,
    WHAT,
    add_endpoints,
    endpoints,
    id_guard,
    positive_control,
    reference_of,
)
from testbed.analysis.fits import (
    CONFIDENCE,
    MIN_POINTS,
    MIN_SEEDS,
    Fit,
    bonferroni,
    decided,
    fit_trend,
    verdict,
)
from testbed.analysis.line import LINE_BASELINE, Line, on_the_line
from testbed.analysis.select import Selected, hparams_text, save_selection, selected_runs
from testbed.errors import ConfigError, check_choice
from testbed.files import write_atomic

AXES = {"params": ("parameters", "at the largest training set and budget"),
        "n_train": ("training samples", "at the largest model and budget"),
        "flops": ("FLOPs", "varying the budget at the largest model and training set")}
COLUMNS = ["regime", "baseline", "axis", "metric", "form", "slope", "m_inf", "m_inf_low", "m_inf_high",
           "closing_scale", "closing_low", "closing_high", "verdict"]
# --familywise: how the per-verdict level follows from the report's `confidence`
FAMILYWISE = {"none": "each verdict's intervals at the stated level; the chance that some verdict is wrong grows with "
                      "their number",
              "bonferroni": "every interval widened to 1 - (1 - level) / m over the m verdicts the report writes, so "
                            "that all hold together with at least the stated probability (Bonferroni's union bound)"}
SHORT = {"confusion_gap": "gap", "ood_wg_shortfall": "shortfall", "spurious_reliance": "reliance",
         "return_shortfall": "return shortfall", "probe_confusion_gap": "probe gap"}


def judge(group: pd.DataFrame, axis: str, metric: str, is_reference: bool, bootstrap: int | None = None,
          confidence: float = CONFIDENCE) -> tuple[Fit, str, str]:
    """The fit of one endpoint against one axis for one regime and baseline (one row per run), with intervals at
    `confidence`, its verdict word and reason, the ID guard applied. `benchmarks/verdicts.py` calibrates exactly
    this function."""
    fit = fit_trend(group[axis].to_numpy(), group[metric].to_numpy(), TOLERANCE[metric], bootstrap=bootstrap,
                    bounds=BOUNDS[metric], seeds=group["seed"].to_numpy(), confidence=confidence)
    word, reason = verdict(fit, TOLERANCE[metric], AXES[axis][0])
    guard = id_guard(group, axis, is_reference)
    if is_reference and metric in ("confusion_gap", "probe_confusion_gap"):
        word, reason = "reference", "the reference: its confusion gap is 0 by construction"
    elif guard and fit.points >= MIN_POINTS and fit.seeds >= MIN_SEEDS:
        word, reason = "collapses", guard
    elif guard:  # too few points or seeds for any verdict but inconclusive
        reason += f"; the ID guard would flag it: {guard}"
    return fit, word, reason


def fit_all(runs: pd.DataFrame, reference: str | None, bootstrap: int | None,
            confidence: float = CONFIDENCE) -> tuple[pd.DataFrame, dict]:
    """A fit and a verdict per regime, baseline, axis and endpoint (intervals at `confidence`); the Fit objects
    keyed by those four."""
    rows, fits = [], {}
    for metric in endpoints(runs):
        data = runs.dropna(subset=[metric])  # before the views: a view of NaN rows would fit nothing
        for axis in fitted_axes(runs):
            view = along(data, axis)
            for (regime, baseline), group in view.groupby(["regime", "baseline"]):
                if group[axis].nunique() < 2:
                    continue
                fit, word, reason = judge(group, axis, metric, baseline == reference, bootstrap, confidence)
                fits[(regime, baseline, axis, metric)] = fit
                m_inf, m_inf_low, m_inf_high = asymptote(fit)
                rows.append({"regime": regime, "baseline": baseline, "axis": axis, "metric": metric,
                             "form": fit.form, "slope": fit.slope, "m_inf": m_inf, "m_inf_low": m_inf_low,
                             "m_inf_high": m_inf_high, "closing_scale": fit.closing_scale,
                             "closing_low": fit.closing_low, "closing_high": fit.closing_high, "verdict": word,
                             "reason": reason, "fit": fit})
    return pd.DataFrame(rows), fits


def held(axis: str, runs: pd.DataFrame) -> str:
    """What a view along `axis` holds at its largest: the budget only where one is swept."""
    return AXES[axis][1] if budget_varies(runs) else AXES[axis][1].replace(" and budget", "")


def fitted_axes(runs: pd.DataFrame) -> list[str]:
    """The scale axes fitted against: parameters and training samples, and FLOPs only where a budget axis is
    swept (without one, FLOPs follow the model and the data, and a fit against them repeats those fits)."""
    return [a for a in AXES if a != "flops" or budget_varies(runs)]


def asymptote(fit: Fit) -> tuple[float, float, float]:
    """The fitted level `m_inf` with its interval, for the saturating power law only: the log-linear form has no
    asymptote, and the power law's `m_inf` refitted beside it means nothing there."""
    if fit.form != "power law":
        return np.nan, np.nan, np.nan
    return fit.m_inf, fit.m_inf_low, fit.m_inf_high


def sizes(values: pd.Series, what: str, unit: str) -> str:
    """`3 model sizes (54 to 5,782 parameters)`, or `one model size (289 parameters)`."""
    if values.nunique() == 1:
        return f"one {what} ({values.iloc[0]:,}{unit})"
    return f"{values.nunique()} {what}s ({values.min():,} to {values.max():,}{unit})"


def scale(v: float) -> str:
    return f"{v:.1e}" if np.isfinite(v) else "beyond horizon"


def detail_table(sub: pd.DataFrame) -> list[str]:
    lines = ["| regime | baseline | points | seeds | at smallest | at largest | slope per decade [95% CI] | form | "
             "m_inf (power law) [95% CI] | closing scale [95% CI] | verdict | reason |", "|" + "---|" * 12]
    for r in sub.itertuples():
        f: Fit = r.fit
        level, low, high = asymptote(f)
        m_inf = f"{level:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(level) else "-"
        lines.append(f"| {r.regime} | {r.baseline} | {f.points} | {f.seeds} | {f.first:.3f} | {f.last:.3f} | "
                     f"{f.slope:+.3f} [{f.slope_low:+.3f}, {f.slope_high:+.3f}] | {f.form} | {m_inf} | "
                     f"{scale(f.closing_scale)} [{scale(f.closing_low)}, {scale(f.closing_high)}] | "
                     f"**{r.verdict}** | {r.reason} |")
    return lines


def regime_kinds(runs: pd.DataFrame) -> dict[str, tuple[bool, float, float]]:
    """Per regime whose runs record both the attribute's training accuracy and the invariant ceiling: whether it
    is a positive control (`endpoints.positive_control`), and the two numbers."""
    known = {}
    for regime, g in runs.groupby("regime"):
        spurious = pd.to_numeric(g.get("spurious_accuracy"), errors="coerce")
        ceiling = pd.to_numeric(g.get("ceiling"), errors="coerce")
        if spurious is not None and ceiling is not None and spurious.notna().all() and ceiling.notna().all():
            known[regime] = (positive_control(spurious.mean(), ceiling.mean()), spurious.mean(), ceiling.mean())
    return known


def kinds_lines(kinds: dict[str, tuple[bool, float, float]]) -> list[str]:
    """The headline's split of the regimes into positive controls and those that carry the evidence about scale."""
    if not kinds:
        return []
    name = lambda rs: ", ".join(f"`{r}` (attribute {kinds[r][1]:.2f}, ceiling {kinds[r][2]:.2f})" for r in rs)  # noqa: E731
    controls = [r for r, (c, _, _) in kinds.items() if c]
    evidence = [r for r, (c, _, _) in kinds.items() if not c]
    out = []
    if controls:
        out.append(f"**Positive control: {name(controls)}.** In training the spurious attribute alone predicts the "
                   "label better than the invariant ceiling, so the ID-optimal predictor follows it: ERM's reliance "
                   "near 1 and a gap that does not close are expected there at any scale, by construction. They check "
                   "the instruments (reliance, the gap, the ID guard), not whether scale helps.")
    if evidence:
        out.append(f"**Evidence about scale: {name(evidence)}.** The attribute predicts no better than the ceiling, so "
                   "the invariant predictor is also ID-optimal (shortcut-like): whether a method's gap closes with "
                   "scale here is the answer the sweep exists for.")
    return [line for text in out for line in (text, "")]


def verdict_table(rows: pd.DataFrame, primary: str, kinds: dict | None = None) -> list[str]:
    axes = [a for a in AXES if a in set(rows["axis"])]
    lines = ["| regime | baseline | " + " | ".join(f"vs {AXES[a][0]}" for a in axes) + " | reason |",
             "|---|---|" + "---|" * (len(axes) + 1)]
    for (regime, baseline), group in rows.groupby(["regime", "baseline"]):
        by = group.set_index(["axis", "metric"])
        cells = [f"**{by.loc[(a, primary), 'verdict']}**" if (a, primary) in by.index else "-" for a in axes]
        first = next((a for a in axes if (a, primary) in by.index), by.index[0][0])
        reason = []
        for metric in (primary, "spurious_reliance"):
            if (first, metric) in by.index:
                r = by.loc[(first, metric)]
                what = f"{SHORT[metric]} {r.fit.first:.2f} -> {r.fit.last:.2f}"
                reason.append(f"{what}: {r.reason}" if metric == primary else f"{what} ({r.verdict})")
        tag = " (positive control)" if (kinds or {}).get(regime, (False,))[0] else ""
        lines.append(f"| {regime}{tag} | {baseline} | " + " | ".join(cells)
                     + f" | vs {AXES[first][0]}: " + "; ".join(reason) + " |")
    return lines


def choices_table(sel: Selected) -> list[str]:
    if sel.rule == "none" and (sel.choices["draws"] <= 1).all():
        return ["One draw per scale point: nothing to select."]
    c = sel.choices
    regime = [col for col in ("config",) if col in c]
    hidden = ("rule", "per", "hparams", "draws", "model", *regime, *(("seeds",) if sel.per == "point" else ()))
    shown = [col for col in c.columns if col not in hidden]
    lines = ["| " + " | ".join([*regime, *shown, "draws", "hyperparameters"]) + " |",
             "|" + "---|" * (len(regime) + len(shown) + 2)]
    for r in c.to_dict("records"):
        values = [f"{r[k]:.3f}" if k.startswith("val/") else str(r[k]) for k in [*regime, *shown]]
        lines.append("| " + " | ".join([*values, str(r["draws"]), hparams_text(r["hparams"])]) + " |")
    return lines


def point_table(runs: pd.DataFrame, metrics: list[str]) -> list[str]:
    """Means over seeds per regime, baseline and model size at the largest training set and budget."""
    view = along(runs, "params")
    cols = [m for m in ["acc_id", "acc_avg", "acc_wg", "ood_gap", *metrics] if m in view]
    means = view.groupby(["regime", "baseline", "params"])[cols].mean().reset_index()
    lines = ["| regime | baseline | parameters | " + " | ".join(cols) + " |", "|" + "---|" * (3 + len(cols))]
    for r in means.to_dict("records"):
        lines.append(f"| {r['regime']} | {r['baseline']} | {r['params']:,} | "
                     + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    return lines


@dataclass
class Verdicts:
    """Every verdict the report writes, with intervals at one level: the fits' rows (and Fits), the dose sections'
    numbers and the continual part's."""
    confidence: float
    rows: pd.DataFrame
    fits: dict
    online: DoseNumbers | None
    control: DoseNumbers | None
    continual: Continual | None

    @property
    def count(self) -> int:
        """The verdicts that rest on intervals (`fits.decided`; not the reference's gap, 0 by construction): the
        family a correction is over."""
        main = sum(decided(r.fit) for r in self.rows.itertuples() if r.verdict != "reference") if len(self.rows) else 0
        doses = sum(decided(v.fit) for n in (self.online, self.control) if n for r in n.regimes for v in r.verdicts)
        return main + doses + sum(decided(v.fit) for v in (self.continual.verdicts if self.continual else []))


def all_verdicts(runs: pd.DataFrame, axes: list[str], reference: str | None, bootstrap: int | None,
                 confidence: float) -> Verdicts:
    """Every verdict from the selected runs (with their endpoints) of a sweep with `axes`."""
    rows, fits = fit_all(runs, reference, bootstrap, confidence)
    return Verdicts(confidence, rows, fits, dose_numbers(ONLINE, runs, axes, confidence),
                    dose_numbers(CONTROL, runs, axes, confidence), continual_numbers(runs, confidence))


def check_level(confidence: float) -> None:
    if not 0.5 <= confidence < 1:
        raise ConfigError(f"confidence: {confidence} is outside the allowed range [0.5, 1); give a level such as 0.95")


def percent(level: float) -> str:
    """A level with the digits its miss rate needs: 95%, 99.72%, 99.995%."""
    return f"{100 - float(f'{100 * (1 - level):.2g}'):g}%"


def level_text(found: Verdicts, confidence: float, familywise: str) -> str:
    """The intervals' level as the criterion states it."""
    if familywise == "bonferroni" and found.count > 1:
        return (f"{percent(found.confidence)} (Bonferroni over the {found.count} verdicts that rest on intervals: "
                f"{percent(confidence)} family-wise)")
    return f"{percent(confidence)} (per verdict, no family-wise correction)"


def family_line(found: Verdicts, confidence: float, familywise: str) -> str:
    """How many verdicts rest on intervals, and what that means for the chance that some are wrong."""
    m, miss = found.count, 1 - confidence
    rate = f"{100 * miss:.2g}%"
    if m == 0:
        return "No verdict here rests on intervals (too few scale points or seeds): none can be wrong but none decides."
    if familywise == "bonferroni" and m > 1:
        return (f"**{m} verdicts rest on intervals, corrected family-wise (Bonferroni): each interval at "
                f"{percent(found.confidence)}, so that all {m} hold together with probability at least "
                f"{percent(confidence)}.** The price is width: more of them are inconclusive than at "
                f"{percent(confidence)} each. The ID guard (collapses) compares a mean with a fixed margin and is "
                "not widened.")
    expected = f"{m * miss:.2g}"
    return (f"**{m} verdict{'s rest' if m > 1 else ' rests'} on intervals, each at {percent(confidence)}.** If each "
            f"can be wrong with probability up to {rate}, up to {expected} of them may be wrong in expectation "
            f"and the chance that at least one is wrong can reach {min(1.0, m * miss):.0%} (the union bound; "
            f"{1 - confidence**m:.0%} if they were independent). `benchmarks/verdicts.py` measures the rates on known "
            f"truths (`benchmarks/README.md`); `testbed report --familywise bonferroni` widens every interval to "
            f"{percent(bonferroni(confidence, m))} so that the chance that any is wrong is at most {rate}.")


def criterion(metrics: list[str], level: str) -> str:
    """The verdict words as the module's docstring defines them, with the numbers filled in: the intervals' level
    and the tolerances of this sweep's endpoints only (a classification sweep has no return shortfall, a sweep
    with a reference no shortfall from the ceiling)."""
    text = __doc__.split("\n\n", 1)[1].strip()
    tolerances = ", ".join(f"{SHORT[m]} {TOLERANCE[m]:g}" for m in metrics) or "none (no endpoint to fit)"
    for name, value in (("CONFIDENCE", level), ("MIN_POINTS", str(MIN_POINTS)), ("MIN_SEEDS", str(MIN_SEEDS)),
                        ("ID_TOL", f"{ID_TOL:g}"), ("TOLERANCES", tolerances)):
        text = text.replace(name, value)
    return text


@dataclass
class Report:
    """Everything report.md says, computed once from one selection, before anything is written: the selection (its
    degenerate runs set apart), the selected runs with their endpoints, every verdict (fits, dose numbers, continual
    part), the regimes' kinds, the reference's and the runs' convergence checks, and accuracy on the line. Without
    runs to fit (every selected run degenerate) it holds the selection only."""
    sel: Selected
    all_runs: bool
    confidence: float  # as asked: of each verdict, or with familywise "bonferroni" of all of them together
    familywise: str
    reference: str | None = None
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    verdicts: Verdicts | None = None
    kinds: dict[str, tuple[bool, float, float]] = field(default_factory=dict)
    reference_check: ReferenceCheck | None = None  # None: no reference
    convergence: Convergence | None = None  # None: not recorded
    line: list[Line] = field(default_factory=list)  # the ERM line per regime (`on_the_line`)
    robustness: pd.DataFrame = field(default_factory=pd.DataFrame)  # each baseline's effective robustness above it

    @property
    def rows(self) -> pd.DataFrame:
        """One row per fit (`fit_all`)."""
        return self.verdicts.rows

    @property
    def metrics(self) -> list[str]:
        return endpoints(self.runs)

    @property
    def primary(self) -> str | None:
        """The endpoint the verdict table gives: the gap, where the runs have one."""
        return self.metrics[0] if self.metrics else None

    @property
    def fitted(self) -> bool:
        """Whether a trend was fitted: the headline's table and figure then exist."""
        return self.primary is not None and not self.rows.empty

    @property
    def headline_axis(self) -> str:
        """The first scale axis fitted against: the headline's and the verdict table's reasons'."""
        return next(a for a in AXES if (self.rows["axis"] == a).any())

    @property
    def headline_metrics(self) -> list[str]:
        return [m for m in ("spurious_reliance", self.primary) if m in self.metrics]

    @property
    def probe_axis(self) -> str | None:
        """The first axis with a fitted probe gap, None without one."""
        rows = self.rows
        return next((a for a in AXES if len(rows) and ((rows["axis"] == a)
                                                       & (rows["metric"] == "probe_confusion_gap")).any()), None)


def compute_report(sweep_dir: Path, all_runs: bool = False, rule: str | None = None, reference: str | None = None,
                   bootstrap: int | None = None, confidence: float = CONFIDENCE, familywise: str = "none",
                   per: str | None = None) -> Report:
    """Collect once, select, add the endpoints and judge: the whole report, with nothing written (a bad option
    raises first). `confidence`: the level of each verdict's intervals or, with `familywise` "bonferroni", of all
    of them together."""
    check_level(confidence)
    check_choice("familywise", familywise, FAMILYWISE)
    sel = selected_runs(sweep_dir, all_runs, rule, save=False, per=per)
    if sel.runs.empty:  # every selected run predicts one class: nothing to fit, point at or draw
        return Report(sel, all_runs, confidence, familywise)
    reference = reference_of(sel.runs, reference)
    runs = add_endpoints(sel.runs, sel.axes, reference)
    found = all_verdicts(runs, sel.axes, reference, bootstrap, confidence)
    if familywise == "bonferroni" and found.count > 1:  # the same verdicts, each at the corrected level
        found = all_verdicts(runs, sel.axes, reference, bootstrap, bonferroni(confidence, found.count))
    line, robustness = on_the_line(runs, bootstrap=bootstrap or 1000)
    return Report(sel, all_runs, confidence, familywise, reference, runs, found, regime_kinds(runs),
                  reference_check(runs, reference, sel.axes), convergence(runs, sel.axes), line, robustness)


def fits_table(report: Report) -> pd.DataFrame:
    """fits.csv: a row per fit, the COLUMNS (none without runs to fit)."""
    rows = report.verdicts.rows if report.verdicts else pd.DataFrame()
    return rows[COLUMNS] if len(rows) else pd.DataFrame(columns=COLUMNS)


def draw_figures(report: Report, sweep_dir: Path) -> list[Path]:
    """The report's own figures (the headline, accuracy on the line, probe vs head, the dose sections') under
    `figures/`, then `plot`'s; returns `plot`'s, which the Figures section lists."""
    from testbed.analysis.fit_plots import headline, line_figure, probe_figure
    from testbed.analysis.plots import plot_sweep

    figures = sweep_dir / "figures"
    figures.mkdir(exist_ok=True)
    runs = report.runs
    if report.fitted:
        axis = report.headline_axis
        headline(along(runs, axis), report.verdicts.fits, report.headline_metrics, axis, figures / "headline")
    if report.line:
        line_figure(runs, report.line, figures / "accuracy_on_the_line")
    if report.probe_axis is not None:
        probe_figure(along(runs, report.probe_axis), report.probe_axis, figures / "probe_vs_head")
    for numbers in (report.verdicts.online, report.verdicts.control):
        dose_figures(numbers, figures)
    return [p for p in plot_sweep(sweep_dir, runs) if p.suffix == ".png"]


def section_verdict(report: Report) -> list[str]:
    """The headline: the selection, what was swept, the checks' warnings, the verdict table and its figure."""
    sel, runs = report.sel, report.runs
    excluded = f", {len(sel.degenerate)} degenerate left out" if len(sel.degenerate) else ""
    out = ["## Verdict", "", f"**Selection: {sel.label}.**", "",
           f"Sweep `{runs['sweep'].iloc[0]}`, {len(runs)} selected runs "
           f"({'every finished folder' if report.all_runs else 'of the sweep file as last run'}{excluded}): baselines "
           f"{', '.join(sorted(runs['baseline'].unique()))}; {sizes(runs['params'], 'model size', ' parameters')}, "
           f"{sizes(runs['n_train'], 'training-set size', ' samples')}, {runs['seed'].nunique()} seeds. "
           f"Reference: {report.reference or 'none (the gap is the shortfall from the ceiling)'}.", ""]
    warnings = (degenerate_warning(sel), reference_warning(report.reference_check),
                undertrained_warning(report.convergence), code_warning(runs))
    out += [line for w in warnings if w for line in (w, "")]
    if not report.fitted:
        return [*out, "No trend to fit: the sweep needs at least two values of a scale axis.", ""]
    axis, shown = report.headline_axis, report.headline_metrics
    return [*out, f"Verdict on the {WHAT[report.primary]} per scale axis; the reason is given for the first axis.", "",
            *verdict_table(report.rows, report.primary, report.kinds), "", *kinds_lines(report.kinds),
            family_line(report.verdicts, report.confidence, report.familywise), "",
            "![headline](figures/headline.png)", "",
            f"*{' and '.join(WHAT[m] for m in shown)} against {AXES[axis][0]} ({held(axis, runs)}); lines: the "
            "chosen fit where one is claimed, dashed where projected (at most one measured span past the largest "
            "scale); points: mean over seeds with its 95% t interval, held in the endpoint's bounds; dotted: "
            "the tolerance.*", ""]


def section_reference(report: Report) -> list[str]:
    return ["## Reference check", "", *reference_lines(report.reference_check), ""]


def section_undertrained(report: Report) -> list[str]:
    return ["## Undertrained runs", "", *undertrained_lines(report.convergence), ""]


def section_degenerate(report: Report) -> list[str]:
    return ["## Degenerate runs", "", *degenerate_lines(report.sel), ""]


def section_hparams(report: Report) -> list[str]:
    return ["## Selected hyperparameters", "", f"Rule: {report.sel.label}. Also in `selected.csv`.", "",
            *choices_table(report.sel), ""]


def section_points(report: Report) -> list[str]:
    """The endpoints' means at each model size; none without endpoints."""
    if not report.metrics:
        return []
    return [f"## Endpoints at each model size ({held('params', report.runs)[7:]}, mean over seeds)", "",
            "`ood_gap` (ID - OOD accuracy) is descriptive only: it also shrinks when ID accuracy falls.", "",
            *point_table(report.runs, report.metrics), ""]


def section_details(report: Report) -> list[str]:
    """A section per scale axis and endpoint with its fits' details."""
    rows, out = report.rows, []
    for axis, (name, _) in AXES.items():
        for metric in report.metrics:
            sub = rows[(rows["axis"] == axis) & (rows["metric"] == metric)] if len(rows) else rows
            if len(sub):
                title = WHAT[metric][0].upper() + WHAT[metric][1:]
                out += [f"## {title} vs {name} ({held(axis, report.runs)})", "", *detail_table(sub), ""]
    return out


def section_line(report: Report) -> list[str]:
    """Accuracy on the line: the ERM line per regime and each baseline's effective robustness above it."""
    out = ["## Accuracy on the line", ""]
    if not report.line:
        return [*out, f"Too few {LINE_BASELINE} runs with varying ID accuracy to fit the line (3 are needed).", ""]
    out += ["| regime | ERM runs | probit slope | intercept | R^2 |", "|---|---|---|---|---|"]
    out += [f"| {ln.regime} | {ln.runs} | {ln.slope:.2f} | {ln.intercept:+.2f} | {ln.r2:.2f} |" for ln in report.line]
    out += ["", "Effective robustness: mean OOD accuracy above the ERM line at the same ID accuracy (accuracy units).",
            "", "| regime | baseline | runs | effective robustness [95% CI] |", "|---|---|---|---|"]
    out += [f"| {r.regime} | {r.baseline} | {r.runs} | {r.effective_robustness:+.3f} [{r.low:+.3f}, {r.high:+.3f}] |"
            for r in report.robustness.itertuples()]
    return [*out, "", "![accuracy_on_the_line](figures/accuracy_on_the_line.png)", ""]


def section_probe(report: Report) -> list[str]:
    """Features vs head: does the feature gap (probe) close, does the head gap close? None without probe fits."""
    axis, rows = report.probe_axis, report.rows
    if axis is None:
        return []
    sub = rows[rows["metric"].isin(["confusion_gap", "probe_confusion_gap"])]
    out = ["## Features vs head (probe)", "",
           f"Against {AXES[axis][0]} ({held(axis, report.runs)}). The head gap is the confusion gap of the trained "
           "model; the feature gap the same for a group-balanced linear probe on its frozen features.", "",
           "| regime | baseline | head gap (smallest -> largest) | head gap | feature gap (smallest -> largest) | "
           "feature gap | reading |", "|---|---|---|---|---|---|---|"]
    for (regime, baseline), g in sub[sub["axis"] == axis].groupby(["regime", "baseline"]):
        by = g.set_index("metric")
        if not {"confusion_gap", "probe_confusion_gap"} <= set(by.index):
            continue
        head, feat = by.loc["confusion_gap"], by.loc["probe_confusion_gap"]
        reading = ("the features carry the causal feature; the head does not use it"
                   if feat.verdict == "closes" and head.verdict != "closes" else
                   "both close" if feat.verdict == head.verdict == "closes" else
                   "the features themselves lack it" if feat.verdict == "does not close" else "-")
        out.append(f"| {regime} | {baseline} | {head.fit.first:.2f} -> {head.fit.last:.2f} | **{head.verdict}** | "
                   f"{feat.fit.first:.2f} -> {feat.fit.last:.2f} | **{feat.verdict}** | {reading} |")
    return [*out, "", "![probe_vs_head](figures/probe_vs_head.png)", "",
            "*OOD worst-group accuracy of the head (solid) and of the probe (dashed); points: mean over seeds with its "
            "95% t interval, held in [0, 1].*", ""]


def section_online(report: Report) -> list[str]:
    """Online training: the Online runs' dose-response and the continual fine-tuning part; none without either."""
    lines = dose_lines(report.verdicts.online) + continual_lines(report.verdicts.continual)
    return ["## Online training", "", *lines, ""] if lines else []


def section_control(report: Report) -> list[str]:
    """Online control: the DAgger runs' dose-response; none without them."""
    lines = dose_lines(report.verdicts.control)
    return ["## Online control", "", *lines, ""] if lines else []


def section_criterion(report: Report) -> list[str]:
    """The verdict words with this report's numbers, what the intervals leave out, and too few seeds named."""
    sel, seeds = report.sel, report.runs["seed"].nunique()
    level = level_text(report.verdicts, report.confidence, report.familywise)
    out = ["## Criterion", "", criterion(report.metrics, level), "",
           f"Selection: {sel.label}." + (" Each seed's runs are of the draw chosen on that seed, so the chosen runs' "
                                         "spread, which the bootstrap resamples, carries the selection's noise."
                                         if sel.per == "seed" else " The choice is taken as given by the intervals: "
                                         "its noise is not carried."), ""]
    if seeds < MIN_SEEDS:
        out += [f"With {seeds} seed(s) no verdict can be other than **inconclusive**: run at least {MIN_SEEDS}.", ""]
    return out


def section_figures(drawn: list[Path]) -> list[str]:
    """The list of `plot`'s figures (`draw_figures`)."""
    return ["## Figures", "", *(f"![{p.stem}](figures/{p.name})" for p in drawn), ""]


def section_all_degenerate(report: Report) -> list[str]:
    """The headline of a sweep whose selected runs all predict one class: it says so and fits nothing, so that a
    sweep too short to learn anything is not read as a result."""
    bad = report.sel.degenerate
    return ["## Verdict", "", f"**Selection: {report.sel.label}.**", "",
            f"Sweep `{bad['sweep'].iloc[0]}`: all {len(bad)} selected runs "
            f"({'every finished folder' if report.all_runs else 'of the sweep file as last run'}) are degenerate: each "
            "predicts one class on every test group, so nothing is fitted or drawn. Train longer (more epochs or "
            "steps, a larger learning rate) or wider models; see Degenerate runs.", ""]


SECTIONS = (section_verdict, section_reference, section_undertrained, section_degenerate, section_hparams,
            section_points, section_details, section_line, section_probe, section_online, section_control,
            section_criterion)  # then the Figures, which lists what `plot` drew


def write_report(sweep_dir: Path, all_runs: bool = False, rule: str | None = None, reference: str | None = None,
                 bootstrap: int | None = None, confidence: float = CONFIDENCE, familywise: str = "none",
                 per: str | None = None) -> Path:
    """Compute the report (`compute_report`), then write results.csv, selected.csv, fits.csv, the figures and
    report.md, its sections in order. `confidence`: the level of each verdict's intervals or, with `familywise`
    "bonferroni", of all of them together."""
    report = compute_report(sweep_dir, all_runs, rule, reference, bootstrap, confidence, familywise, per)
    save_selection(report.sel, sweep_dir)
    write_atomic(sweep_dir / "fits.csv", fits_table(report).to_csv(index=False))
    if report.verdicts is None:
        out = [*section_all_degenerate(report), *section_degenerate(report), *section_hparams(report)]
    else:
        drawn = draw_figures(report, sweep_dir)
        out = [line for section in SECTIONS for line in section(report)] + section_figures(drawn)
    path = sweep_dir / "report.md"
    write_atomic(path, "\n".join(out))
    return path
