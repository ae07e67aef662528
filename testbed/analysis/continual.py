"""The report's continual fine-tuning part of "Online training": does continual fine-tuning learn the new spurious
correlation at every size?

`ContinualFinetune` runs: each phase's spurious reliance on that phase's own attribute at the phase's end, per model
size; the phase that brings a new attribute (`spurious_feature` changed; else the last) is fitted against
parameters with the report's criterion for reliance (tolerance `TOLERANCE["spurious_reliance"]`): "does not close"
means larger models learn the new correlation too.

Reads the selected runs' table only (their phases in its `records` column, `testbed.analysis.collect.RECORDS`): no
torch, no Lightning.
"""

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from testbed.analysis.collect import method
from testbed.analysis.endpoints import TOLERANCE
from testbed.analysis.fits import CONFIDENCE, Fit, fit_trend, verdict


def continual_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per ContinualFinetune run and phase: reliance on that phase's attribute at the phase's end."""
    rows = []
    for _, run in runs[method(runs) == "ContinualFinetune"].iterrows():
        phases = json.loads(run["records"]).get("phases") or []
        new = next((p["phase"] for p in phases if "spurious_feature" in (p.get("changes") or {})),
                   phases[-1]["phase"] if phases else None)
        for p in phases:
            rows.append({"regime": run["regime"], "params": run["params"],
                         "seed": run["seed"], "phase": p["phase"], "new": p["phase"] == new,
                         "changes": json.dumps(p.get("changes") or {}),
                         "reliance": p["metrics"][f"p{p['phase']}"].get("spurious_reliance", np.nan)})
    return pd.DataFrame(rows)


@dataclass
class ContinualVerdict:
    """One regime's verdict on its reliance on the new attribute against parameters (no Fit from one size)."""
    regime: str
    word: str
    reason: str
    fit: Fit | None


@dataclass
class Continual:
    """The part's numbers: reliance per run and phase (`continual_table`) and a verdict per regime."""
    table: pd.DataFrame
    verdicts: list[ContinualVerdict]


def continual_numbers(runs: pd.DataFrame, confidence: float = CONFIDENCE) -> Continual | None:
    """The part's numbers from `runs` (the selected runs, `testbed.analysis.select`), the verdicts' intervals at
    `confidence`; None without ContinualFinetune runs."""
    table = continual_table(runs)
    if table.empty:
        return None
    tol, verdicts = TOLERANCE["spurious_reliance"], []
    for regime, g in table[table["new"]].groupby("regime"):
        if g["params"].nunique() < 2:
            verdicts.append(ContinualVerdict(regime, "inconclusive", "one model size: at least two are needed for a "
                                             "trend", None))
            continue
        fit = fit_trend(g["params"].to_numpy(), g["reliance"].to_numpy(), tol, seeds=g["seed"].to_numpy(),
                        confidence=confidence)
        verdicts.append(ContinualVerdict(regime, *verdict(fit, tol, "parameters"), fit))
    return Continual(table, verdicts)


def continual_lines(numbers: Continual | None) -> list[str]:
    """The part's lines; none without numbers."""
    if numbers is None:
        return []
    out = ["### Continual fine-tuning: reliance on each phase's attribute", "",
           "Does continual fine-tuning learn the new spurious correlation at every size? "
           "(Criteria: `testbed.analysis.continual`.)", "",
           "| regime | parameters | phase | changes | reliance on its attribute (mean) | seeds |",
           "|---|---|---|---|---|---|"]
    for (regime, params, phase), g in numbers.table.groupby(["regime", "params", "phase"]):
        out.append(f"| {regime} | {params:,} | {phase}{' (new attribute)' if g['new'].iloc[0] else ''} | "
                   f"`{g['changes'].iloc[0]}` | {g['reliance'].mean():.3f} | {len(g)} |")
    out.append("")
    for v in numbers.verdicts:
        claim = {"does not close": "larger models learn the new spurious correlation too",
                 "closes": "with scale it stops learning the new spurious correlation"}.get(v.word, "undecided")
        out += [f"**{v.regime}: reliance on the new attribute vs parameters: {v.word}** ({claim}; {v.reason}).", ""]
    return out
