"""Trend fits of one endpoint against one scale axis, with bootstrap intervals and a verdict.

Two forms are fitted by weighted least squares to the mean at each scale point (weights = runs there, so the
fit equals one through every run): the log-linear trend `m = a + b log10(N)` and the saturating power law
`m(N) = m_inf + A (N / N_min)^-alpha` of scaling-law work (Kaplan et al. 2020; Hoffmann et al. 2022), fitted
with scipy, its asymptote held inside the endpoint's bounds. The form with the lower AICc (AIC with its
small-sample correction) gives the point estimates.

Intervals come from a bootstrap over seeds: at each scale point the runs are resampled with replacement and
both forms refitted, and each replicate chooses its own form by AICc, so the intervals carry the uncertainty
of the form choice (they do not condition on the form chosen once). A percentile bootstrap of a mean over n
seeds is too narrow for small n (it misses the t distribution's tails and the (n-1)/n bias of the plug-in
variance), so each resampled mean is moved away from the observed one by `t_{n-1} / z * sqrt(n / (n-1))`
(2.7 at three seeds, 1.6 at five, 1.1 at twenty): the interval of one mean then has the t interval's width.
`tests/test_verdicts.py` checks the coverage. Every interval is at one level, `confidence` (CONFIDENCE, 95%, by
default; a Bonferroni level over a report's verdicts when asked), through one `interval` and one `inflation`; a
narrow tail gets more replicates (TAIL_DRAWS beyond each end). Not carried: seeds are resampled independently at
each scale point (a seed that is the same data draw at every point is not resampled jointly), and the selection
of the hyperparameter draw when it is made per point (per seed, its noise is in the runs' spread).

The tolerance a verdict uses is the endpoint's nominal one or, if larger, the standard error of a mean at one
scale point (the pooled within-point s.d. over the root of the seeds): no finer than the measurement.
"""

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

BOOTSTRAP = 1000
CONFIDENCE = 0.95  # each verdict's intervals; `testbed report --familywise bonferroni` raises it over the verdicts
TAIL_DRAWS = 25  # bootstrap replicates beyond each end of an interval: BOOTSTRAP gives 25 at 95%, a narrower tail more
MIN_POINTS = 3
MIN_SEEDS = 3
ALPHAS = np.geomspace(0.01, 4.0, 160)  # the exponents the bootstrap refits search (the point fit refines)


@dataclass
class Fit:
    form: str  # "log-linear" or "power law": the one with the lower AICc
    slope: float  # log-linear: change per decade of scale, with its interval (at `confidence`, as every interval)
    slope_low: float
    slope_high: float
    m_inf: float  # power law: the asymptote, with its interval
    m_inf_low: float
    m_inf_high: float
    closing_scale: float  # where the chosen curve crosses the tolerance; inf: not within the horizon
    closing_low: float
    closing_high: float
    first: float  # mean at the smallest and the largest scale, and the interval of the latter
    last: float
    last_low: float
    last_high: float
    points: int
    seeds: int  # the fewest distinct seeds (without them, runs) at any scale point
    x_min: float
    x_max: float
    intercept: float  # log-linear a
    amplitude: float  # power law A and alpha
    alpha: float
    end: float  # the fitted value at the largest measured scale, with its interval over the forms' replicates
    end_low: float
    end_high: float
    tolerance: float  # the nominal tolerance, or the standard error of a mean at one point if larger
    power_share: float  # the share of bootstrap replicates whose AICc chose the power law
    bounds: tuple[float, float] = (-1.0, 1.0)
    confidence: float = CONFIDENCE

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The chosen curve at x, held inside the endpoint's bounds."""
        x = np.asarray(x, dtype=float)
        if self.form == "log-linear":
            y = self.intercept + self.slope * np.log10(x)
        else:
            y = self.m_inf + self.amplitude * (x / self.x_min) ** -self.alpha
        return np.clip(y, *self.bounds)

    @property
    def horizon(self) -> float:
        """The furthest scale a projection may reach: as far past the largest measured scale as the measured
        range spans."""
        return self.x_max * self.x_max / self.x_min


def inflation(n: int, confidence: float = CONFIDENCE) -> float:
    """How much wider than a percentile bootstrap a t interval of a mean over n runs is, at `confidence`."""
    if n < 2:
        return 1.0
    q = 1 - (1 - confidence) / 2
    return stats.t.ppf(q, n - 1) / stats.norm.ppf(q) * np.sqrt(n / (n - 1))


def interval(values: np.ndarray, confidence: float = CONFIDENCE, outward: bool = False) -> tuple[float, float]:
    """The central `confidence` percentile interval of bootstrap replicates (NaN ignored); `outward`: the
    replicates at or just outside each end (for a closing scale, whose replicates may be infinite)."""
    tail = (1 - confidence) / 2
    if outward:
        return (float(np.nanquantile(values, tail, method="lower")),
                float(np.nanquantile(values, 1 - tail, method="higher")))
    low, high = np.nanquantile(values, [tail, 1 - tail])
    return float(low), float(high)


def replicates(confidence: float, bootstrap: int | None = None) -> int:
    """Bootstrap replicates for intervals at `confidence`: `bootstrap` (else BOOTSTRAP), or enough to put TAIL_DRAWS
    replicates beyond each end where the tails are narrower (a Bonferroni level)."""
    return max(bootstrap or BOOTSTRAP, int(np.ceil(TAIL_DRAWS / ((1 - confidence) / 2))))


def linear(logx: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of y (..., P) on log10 scale: intercepts and slopes."""
    xm = (w * logx).sum() / w.sum()
    ym = (y * w).sum(-1) / w.sum()
    slope = ((y - ym[..., None]) * w * (logx - xm)).sum(-1) / (w * (logx - xm) ** 2).sum()
    return ym - slope * xm, slope


def power_grid(u: np.ndarray, y: np.ndarray, w: np.ndarray,
               bounds: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """For each row of y (B, P): m_inf, A, alpha and weighted RSS of the best power law on the ALPHAS grid with
    m_inf inside `bounds`. For a fixed alpha the model is linear in m_inf and A: m_inf is the least-squares one
    held in `bounds`, and A and the RSS are the least-squares ones given that m_inf (so a held asymptote is not
    paired with the amplitude fitted for another)."""
    z = u[None, :] ** -ALPHAS[:, None]  # (G, P)
    wn = w / w.sum()
    zm = z @ wn
    dz = z - zm[:, None]
    ym = y @ wn
    free = (y - ym[:, None]) @ (w * dz).T / ((dz**2) @ w)  # (B, G): A with m_inf free
    m = np.clip(ym[:, None] - free * zm, *bounds)
    swz, swzz = z @ w, (z**2) @ w  # (G,)
    num = y @ (w * z).T - m * swz  # sum_i w_i (y_i - m) z_i
    amp = num / swzz
    rss = np.maximum((y**2 @ w)[:, None] - 2 * m * (y @ w)[:, None] + m**2 * w.sum() - num**2 / swzz, 0.0)
    best = np.argmin(rss, axis=1)
    rows = np.arange(len(y))
    return m[rows, best], amp[rows, best], ALPHAS[best], rss[rows, best]


def power_fit(u: np.ndarray, y: np.ndarray, w: np.ndarray,
              bounds: tuple[float, float]) -> tuple[float, float, float, float]:
    """The power law through the means y, from the grid's best, refined by scipy's curve_fit with the asymptote
    inside `bounds`."""
    m, a, alpha, rss = (float(v[0]) for v in power_grid(u, y[None, :], w, bounds))
    try:
        with warnings.catch_warnings():  # the covariance is not used: the intervals come from the bootstrap
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            (m2, a2, alpha2), _ = optimize.curve_fit(lambda x, m_, a_, al: m_ + a_ * x**-al, u, y, p0=(m, a, alpha),
                                                     sigma=1 / np.sqrt(w), bounds=([bounds[0], -np.inf, ALPHAS[0]],
                                                                                   [bounds[1], np.inf, ALPHAS[-1]]))
        rss2 = float((w * (y - m2 - a2 * u**-alpha2) ** 2).sum())
        if rss2 < rss:
            m, a, alpha, rss = m2, a2, alpha2, rss2
    except (RuntimeError, ValueError):
        pass
    return float(m), float(a), float(alpha), float(rss)


def aicc(rss, n: int, k: int):
    """AICc of a least-squares fit with k parameters to n runs (elementwise over arrays of RSS)."""
    aic = n * np.log(np.maximum(rss, 1e-12) / n) + 2 * k
    return aic + 2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else aic


def closing(form: str, tol: float, x_min: float, intercept, slope, m_inf, amp, alpha) -> np.ndarray:
    """The scale at which the curve comes under `tol` to stay (x_min if it starts under; inf if never)."""
    intercept, slope, m_inf, amp, alpha = map(np.asarray, (intercept, slope, m_inf, amp, alpha))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if form == "log-linear":
            cross = 10 ** ((tol - intercept) / slope)
            return np.where(slope < 0, np.maximum(cross, x_min), np.inf)
        cross = x_min * (amp / (tol - m_inf)) ** (1 / alpha)
        falling = np.where(m_inf < tol, np.maximum(cross, x_min), np.inf)
        return np.where(amp > 0, falling, np.where(m_inf < tol, x_min, np.inf))


def fit_trend(x: np.ndarray, y: np.ndarray, tol: float, seed: int = 0, bootstrap: int | None = None,
              bounds: tuple[float, float] = (-1.0, 1.0), seeds: np.ndarray | None = None,
              confidence: float = CONFIDENCE) -> Fit:
    """Both forms through (scale, endpoint) pairs, one pair per run, with bootstrap intervals at `confidence`
    over the runs at each scale point; `bounds`: where the endpoint lives (a gap in [-1, 1], a reliance in
    [0, 1]); `seeds`: each run's seed, so that `Fit.seeds` counts distinct seeds (two runs of one seed are not
    two seeds)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    levels = np.unique(x)
    fewest = int(min(len(np.unique(np.asarray(seeds)[x == v])) for v in levels)) if seeds is not None else None
    groups = [y[x == v] for v in levels]
    w = np.array([len(g) for g in groups], dtype=float)
    means = np.array([g.mean() for g in groups])
    logx, u = np.log10(levels), levels / levels[0]
    n, powered = len(y), len(levels) >= 3
    a0, b0 = (float(v[0]) for v in linear(logx, means[None, :], w))
    within = sum(((g - g.mean()) ** 2).sum() for g in groups)
    rss_lin = float((w * (means - a0 - b0 * logx) ** 2).sum()) + within
    m0, amp0, alpha0, rss_pow = power_fit(u, means, w, bounds) if powered else (np.nan, np.nan, np.nan, np.inf)
    form = "power law" if aicc(rss_pow + within, n, 3) < aicc(rss_lin, n, 2) else "log-linear"
    dof = n - len(levels)
    tol_eff = max(tol, float(np.sqrt(within / dof / w.min())) if dof > 0 else tol)

    rng = np.random.default_rng(seed)
    reps = replicates(confidence, bootstrap)
    boot, within_b = np.empty((reps, len(levels))), np.zeros(reps)
    for j, g in enumerate(groups):
        draw = g[rng.integers(0, len(g), (reps, len(g)))]
        resampled = draw.mean(1)
        within_b += ((draw - resampled[:, None]) ** 2).sum(1)
        boot[:, j] = means[j] + inflation(len(g), confidence) * (resampled - means[j])
    a_b, b_b = linear(logx, boot, w)
    rss_lin_b = (w * (boot - a_b[:, None] - b_b[:, None] * logx) ** 2).sum(1) + within_b
    if powered:
        m_b, amp_b, alpha_b, rss_pow_b = power_grid(u, boot, w, bounds)
        power_b = aicc(rss_pow_b + within_b, n, 3) < aicc(rss_lin_b, n, 2)
    else:
        m_b = amp_b = alpha_b = np.full(reps, np.nan)
        power_b = np.zeros(reps, dtype=bool)
    close0 = closing(form, tol_eff, levels[0], a0, b0, m0, amp0, alpha0)
    close_b = np.where(power_b, closing("power law", tol_eff, levels[0], a_b, b_b, m_b, amp_b, alpha_b),
                       closing("log-linear", tol_eff, levels[0], a_b, b_b, m_b, amp_b, alpha_b))
    with np.errstate(over="ignore", invalid="ignore"):
        end_b = np.clip(np.where(power_b, m_b + amp_b * u[-1] ** -alpha_b, a_b + b_b * logx[-1]), *bounds)
    horizon = levels[-1] ** 2 / levels[0]
    cap = lambda v: float(v) if v <= horizon else np.inf  # noqa: E731  (never claimed past the horizon)
    slope_low, slope_high = interval(b_b, confidence)
    m_inf_low, m_inf_high = interval(m_b, confidence) if powered else (np.nan, np.nan)
    closing_low, closing_high = interval(close_b, confidence, outward=True)
    last_low, last_high = np.clip(interval(boot[:, -1], confidence), *bounds)
    end_low, end_high = interval(end_b, confidence)
    fit = Fit(form=form, slope=b0, slope_low=slope_low, slope_high=slope_high, m_inf=m0, m_inf_low=m_inf_low,
              m_inf_high=m_inf_high, closing_scale=cap(close0), closing_low=cap(closing_low),
              closing_high=cap(closing_high), first=float(means[0]), last=float(means[-1]),
              last_low=float(last_low), last_high=float(last_high), points=len(levels),
              seeds=int(w.min()) if fewest is None else fewest, x_min=float(levels[0]), x_max=float(levels[-1]),
              intercept=a0, amplitude=amp0, alpha=alpha0, end=np.nan, end_low=end_low, end_high=end_high,
              tolerance=tol_eff, power_share=float(power_b.mean()), bounds=bounds, confidence=confidence)
    fit.end = float(fit.predict(levels[-1]))
    return fit


def decided(fit: Fit | None) -> bool:
    """Whether a verdict on this fit rests on its intervals: enough scale points and seeds for a word other than
    inconclusive. These are the verdicts a family-wise correction counts."""
    return fit is not None and fit.points >= MIN_POINTS and fit.seeds >= MIN_SEEDS


def bonferroni(confidence: float, verdicts: int) -> float:
    """The level of each of `verdicts` intervals such that all hold together with probability at least
    `confidence` (Bonferroni's union bound: the miss rates add)."""
    return 1 - (1 - confidence) / max(verdicts, 1)


def verdict(fit: Fit, tol: float, axis_label: str) -> tuple[str, str]:
    """The verdict word for one fit, and its reason (the ID guard is applied by the caller). "closes" rests on
    the largest measured scale; a crossing past it is a projection, at most the measured span further."""
    if not decided(fit):
        need = [f"{fit.points} scale point(s)" if fit.points < MIN_POINTS else "",
                f"{fit.seeds} seed(s) per point" if fit.seeds < MIN_SEEDS else ""]
        return "inconclusive", (f"only {' and '.join(s for s in need if s)}: at least {MIN_POINTS} scale points "
                                f"and {MIN_SEEDS} seeds are needed for a verdict")
    nominal, tol = tol, max(tol, fit.tolerance)
    raised = f" (a point's standard error, over the nominal {nominal:g})" if tol > nominal else ""
    at = (f"at the largest measured scale ({fit.x_max:.1g} {axis_label}) the mean is {fit.last:.3f} "
          f"[{fit.last_low:.3f}, {fit.last_high:.3f}], the fit {fit.end:.3f} [{fit.end_low:.3f}, {fit.end_high:.3f}]; "
          f"tolerance {tol:.3g}{raised}")
    if fit.last_high < tol or fit.end_high < tol:
        return "closes", f"under {tol:.3g}: {at}"
    wider = f"a sweep to {fit.horizon:.1g} {axis_label} would decide"
    if np.isfinite(fit.closing_high) and fit.closing_scale <= fit.horizon:
        where = "past the largest measured scale" if fit.closing_scale > fit.x_max else "inside the measured range"
        return "projected to close", (f"projected to close at about {fit.closing_scale:.1g} {axis_label} "
                                      f"[{fit.closing_low:.1g}, {fit.closing_high:.1g}] ({where}; {fit.form}); "
                                      f"not yet under {tol:.3g}: {at}")
    above = fit.last_low > tol and fit.end_low > tol
    if above and fit.slope_low > 0:
        return "does not close", (f"above {tol:.3g} and rising over the measured range: {fit.slope:+.3f} per "
                                  f"decade [{fit.slope_low:+.3f}, {fit.slope_high:+.3f}]; {at}")
    if above and fit.form == "power law" and fit.m_inf_low > tol:
        return "does not close", (f"levels off above {tol:.3g}: m_inf = {fit.m_inf:.2f} [{fit.m_inf_low:.2f}, "
                                  f"{fit.m_inf_high:.2f}]; {at}")
    if above and fit.slope_high >= 0:
        return "does not close", (f"above {tol:.3g} over the measured range and not credibly falling: "
                                  f"{fit.slope:+.3f} per decade [{fit.slope_low:+.3f}, {fit.slope_high:+.3f}]; {at}")
    if np.isfinite(fit.closing_low):
        return "inconclusive", (f"the closing scale's interval [{fit.closing_low:.1g}, beyond {fit.horizon:.1g}] "
                                f"{axis_label} reaches past the measured span; more seeds or {wider}; {at}")
    return "inconclusive", f"not under {tol:.3g} and no crossing within the measured span; {wider}; {at}"
