"""Accuracy on the line (Miller et al. 2021) and effective robustness (Taori et al. 2020).

Across models of one distribution shift, probit(OOD accuracy) is close to linear in probit(ID accuracy).
The line fitted through every ERM run of a regime is the baseline; a method's effective robustness is its
mean OOD accuracy above what the line predicts at its ID accuracy, in accuracy units, with a 95% bootstrap
interval (ERM's runs and the method's runs resampled, the line refitted; widened for few runs as in
`testbed.analysis.fits`). Liang et al. 2023 find exceptions under strong spurious correlation: R^2 says how well the
line holds here.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from testbed.analysis.fits import inflation, interval

LINE_BASELINE = "ERM"
CLIP = 0.001  # probit(0) and probit(1) are infinite: accuracies are clipped to [0.001, 0.999]


def probit(p: np.ndarray | pd.Series) -> np.ndarray:
    return stats.norm.ppf(np.clip(np.asarray(p, dtype=float), CLIP, 1 - CLIP))


@dataclass
class Line:
    regime: str
    slope: float
    intercept: float
    r2: float
    runs: int

    def predict(self, acc_id: np.ndarray) -> np.ndarray:
        """The OOD accuracy the line predicts at these ID accuracies."""
        return stats.norm.cdf(self.intercept + self.slope * probit(acc_id))


def fit_line(acc_id: np.ndarray, acc_ood: np.ndarray, regime: str = "") -> Line | None:
    """The line through these runs, or None when their ID accuracies do not vary."""
    x, y = probit(acc_id), probit(acc_ood)
    if len(x) < 3 or np.ptp(x) < 1e-9:
        return None
    fit = stats.linregress(x, y)
    return Line(regime, float(fit.slope), float(fit.intercept), float(fit.rvalue**2), len(x))


def on_the_line(runs: pd.DataFrame, bootstrap: int = 1000, seed: int = 0) -> tuple[list[Line], pd.DataFrame]:
    """The ERM line per regime, and each baseline's effective robustness against it."""
    lines, rows = [], []
    rng = np.random.default_rng(seed)
    runs = runs.dropna(subset=["acc_id", "acc_avg"])
    for regime, group in runs.groupby("regime"):
        erm = group[group["baseline"] == LINE_BASELINE]
        line = fit_line(erm["acc_id"].to_numpy(), erm["acc_avg"].to_numpy(), str(regime))
        if line is None:
            continue
        lines.append(line)
        ex, ey = probit(erm["acc_id"]), probit(erm["acc_avg"])
        for baseline, b in group.groupby("baseline"):
            er = b["acc_avg"].to_numpy() - line.predict(b["acc_id"].to_numpy())
            boot = np.empty(bootstrap)
            for i in range(bootstrap):
                j = rng.integers(0, len(ex), len(ex))
                if np.ptp(ex[j]) < 1e-9:
                    boot[i] = np.nan
                    continue
                slope, intercept = np.polyfit(ex[j], ey[j], 1)
                k = rng.integers(0, len(b), len(b))
                pred = stats.norm.cdf(intercept + slope * probit(b["acc_id"].to_numpy()[k]))
                boot[i] = (b["acc_avg"].to_numpy()[k] - pred).mean()
            spread = inflation(len(b)) * (boot - er.mean())
            low, high = er.mean() + np.array(interval(spread))
            rows.append({"regime": regime, "baseline": baseline, "runs": len(b),
                         "effective_robustness": er.mean(), "low": low, "high": high})
    return lines, pd.DataFrame(rows)
