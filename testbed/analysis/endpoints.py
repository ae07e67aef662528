"""The per-run measurements the verdict rests on, beside the descriptive `ood_gap`.

- `confusion_gap`: the reference's (the Oracle's) OOD worst-group accuracy at the same scale point and seed,
  minus the run's: how much of what a model that ignores the spurious attribute reaches the run misses;
- `id_drop`: the ID bar minus the run's ID accuracy, for the ID guard (a gap that closes because the model got
  worse in distribution is a collapse). The bar is the lower of the reference's ID accuracy at the same scale
  point and seed and the invariant ceiling, whichever are known: not the model's own ID accuracy at a smaller
  scale, since in `confounded` following the colour scores about 0.85 ID and the invariant solution 0.75, so a
  model that becomes invariant with scale falls by 0.10 ID, which is the outcome the testbed exists to detect;
- `probe_confusion_gap`: the same gap for a fresh linear head on the frozen features (where probes ran):
  does the representation carry what the head ignores?
- `ood_wg_shortfall`: without a reference in the sweep, the invariant ceiling (else 1) minus OOD worst-group
  accuracy;
- `return_shortfall`: closed loop, 1 - return / the expert's return.
"""

import numpy as np
import pandas as pd

from testbed.errors import ConfigError

REFERENCE = "Oracle"
ID_TOL = 0.05  # an ID accuracy more than 5 points below min(the reference's, the invariant ceiling)
# A trend "closes" once the endpoint is under its tolerance: two accuracy points for gaps, five for reliance
# (even the Oracle flips a few predictions under do(a)) and the closed-loop return.
TOLERANCE = {"confusion_gap": 0.02, "ood_wg_shortfall": 0.02, "spurious_reliance": 0.05,
             "return_shortfall": 0.05, "probe_confusion_gap": 0.02}
BOUNDS = {"confusion_gap": (-1.0, 1.0), "ood_wg_shortfall": (-1.0, 1.0), "spurious_reliance": (0.0, 1.0),
          "return_shortfall": (-np.inf, np.inf), "probe_confusion_gap": (-1.0, 1.0)}  # a return is unbounded
WHAT = {"confusion_gap": "confusion gap (reference - method, OOD worst-group acc.)",
        "ood_wg_shortfall": "OOD worst-group shortfall (ceiling - acc.)",
        "spurious_reliance": "spurious reliance (share of predictions flipped by do(a))",
        "return_shortfall": "closed-loop return shortfall (1 - return / expert's)",
        "probe_confusion_gap": "probe confusion gap (reference - method, probe OOD worst-group acc.)"}


def positive_control(spurious_accuracy: float, ceiling: float) -> bool:
    """Whether a regime is a positive control: in training the spurious attribute alone predicts the label better
    than the invariant ceiling (the causal feature alone). Where the label is the causal class up to label noise
    and the attribute agrees with the label at a rate (SpuriousShapes, Colored MNIST), the best predictor of the
    training data given both then follows the attribute wherever the two disagree, since P(y = a | s != a) beats
    P(y = s | s != a) exactly when corr > 1 - label_noise: ERM's population optimum relies on the attribute at any
    scale (reliance 1 by construction). Where it predicts no better, the invariant predictor is also ID-optimal
    (a shortcut), and whether scale finds it is the question."""
    return spurious_accuracy > ceiling


def point_key(runs: pd.DataFrame, axes: list[str]) -> list[str]:
    """Columns naming a scale point across baselines: the regime and every axis but the baseline's class that all
    runs have (an axis of one stage only, such as Online's `model.fraction`, is part of its baseline's label)."""
    return ["regime", *[a for a in axes if a != "model" and a in runs and runs[a].notna().all()]]


def reference_of(runs: pd.DataFrame, reference: str | None) -> str | None:
    """The named reference baseline, else the Oracle when the sweep has one, else None."""
    names = sorted(runs["baseline"].unique())
    if reference is not None and reference not in names:
        raise ConfigError(f"reference: {reference!r} is not a baseline of this sweep; choose one of "
                          + ", ".join(names))
    return reference or (REFERENCE if REFERENCE in names else None)


def add_endpoints(runs: pd.DataFrame, axes: list[str], reference: str | None) -> pd.DataFrame:
    """`runs` (one row per run, with a `regime` column) with the endpoint columns added."""
    runs = runs.copy()
    if "return_norm" in runs:
        runs["return_shortfall"] = 1 - runs["return_norm"]
    ceiling = pd.to_numeric(runs["ceiling"], errors="coerce") if "ceiling" in runs else pd.Series(np.nan, runs.index)
    if reference is None:
        runs["ood_wg_shortfall"] = ceiling.fillna(1.0) - runs["acc_wg"]
        if "acc_id" in runs and ceiling.notna().any():
            runs["id_drop"] = ceiling - runs["acc_id"]
        return runs
    key = point_key(runs, axes)
    cols = [c for c in ("acc_wg", "acc_id", "probe/acc_wg") if c in runs]
    ref = runs[runs["baseline"] == reference]
    by_seed = ref.groupby([*key, "seed"], dropna=False)[cols].mean().add_prefix("ref_").reset_index()
    by_point = ref.groupby(key, dropna=False)[cols].mean().add_prefix("ref_").reset_index()
    runs = runs.merge(by_seed, on=[*key, "seed"], how="left")
    fallback = runs[key].merge(by_point, on=key, how="left")  # a seed the reference lacks: its mean there
    for c in cols:
        runs[f"ref_{c}"] = runs[f"ref_{c}"].fillna(fallback[f"ref_{c}"])
    runs["confusion_gap"] = runs["ref_acc_wg"] - runs["acc_wg"]
    if "acc_id" in runs:
        runs["id_drop"] = np.fmin(runs["ref_acc_id"], ceiling.to_numpy()) - runs["acc_id"]  # fmin: NaN = unknown
    if "probe/acc_wg" in runs:
        runs["probe_confusion_gap"] = runs["ref_probe/acc_wg"] - runs["probe/acc_wg"]
    return runs.drop(columns=[f"ref_{c}" for c in cols])


def endpoints(runs: pd.DataFrame) -> list[str]:
    """The endpoints these runs have, the primary (the gap) first."""
    return [m for m in TOLERANCE if m in runs and runs[m].notna().any()]


def id_guard(group: pd.DataFrame, axis: str, is_reference: bool) -> str | None:
    """Why this trend is a collapse, or None: at the largest scale of `axis` the mean ID accuracy is more than
    ID_TOL below the ID bar (`id_drop`: the lower of the reference's and the invariant ceiling). Without a
    reference or a ceiling there is no bar, and no guard: a fall from a spurious optimum is not a collapse."""
    if is_reference or "id_drop" not in group or group["id_drop"].isna().all():
        return None
    top = group[group[axis] == group[axis].max()]
    drop, last = top["id_drop"].mean(), top["acc_id"].mean()
    if drop > ID_TOL:
        return (f"ID accuracy {last:.2f} at the largest scale, {drop:.2f} below the lower of the reference's and "
                "the invariant ceiling")
    return None
