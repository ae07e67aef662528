"""How often the report's verdict words are wrong, on simulated sweeps whose truth is known (issue 26 item 8).

Each family is a true confusion gap (and ID accuracy) as a function of d = decades of parameters above the
smallest measured scale. Every replicate draws per-run worst-group and ID accuracies for the method and the
reference (the Oracle) around that truth and passes them through the report's own code path:
`endpoints.add_endpoints` (the confusion gap and the ID bar) and `report.judge` (fit, verdict, ID guard).
Settings: 3, 5 and 7 scale points over two decades (about the quickstart's 54 to 5,782 parameters), 3 and 5
seeds, and two noise levels:

- `low`: per-run s.d. 0.01 of worst-group accuracy, 0.01 of ID accuracy, no bias;
- `wg`: s.d. 0.03 of worst-group accuracy with a bias of -0.03, the measured small-sample behaviour of a minimum
  of four noisy group estimates at quickstart sizes (issue 26), and 0.02 of ID accuracy. The bias is that of a
  model whose groups are level (the reference, an invariant method): it shrinks to 0 as the method's true gap
  grows to 0.1, where one group is clearly the worst and the minimum is no longer biased.

Each family's wrong set is fixed below, before any run, from what each word claims: **closes** (under the
tolerance at a measured scale), **does not close** (above it over the measured range, not credibly falling,
or levelling off above it), **collapses** (ID accuracy under the bar), and the fallbacks **inconclusive** and
**projected to close** (a projection past the largest measured scale, never counted wrong). Goal: wrong <= 5%.

    .venv/bin/python benchmarks/verdicts.py                  # 200 replicates per setting, 95% per verdict
    .venv/bin/python benchmarks/verdicts.py --quick          # 50
    .venv/bin/python benchmarks/verdicts.py --bonferroni 18  # each verdict at 1 - 0.05 / 18, as `testbed report
                                                             # --familywise bonferroni` sets it over 18 verdicts
"""

import argparse
import itertools
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from testbed.analysis.endpoints import add_endpoints  # noqa: E402
from testbed.analysis.fits import CONFIDENCE, bonferroni  # noqa: E402
from testbed.analysis.report import judge, percent  # noqa: E402
from testbed.analysis.select import DEFAULT_PER, PER, select  # noqa: E402

X_MIN, DECADES = 100.0, 2.0
REF_WG, REF_ID, CEILING = 0.70, 0.75, 0.75  # `confounded`: the invariant solution's ID accuracy is the ceiling
NOISE = {"low": (0.01, 0.0, 0.01), "wg": (0.03, -0.03, 0.02)}  # wg s.d., wg bias at level groups, ID s.d.
DRAW_SD, VAL_SD = 0.03, 0.02  # a draw's shortfall from the best one's accuracy; validation accuracy's own noise
WORDS = ["closes", "projected to close", "does not close", "collapses", "inconclusive"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


@dataclass
class Family:
    name: str
    gap: Callable[[np.ndarray], np.ndarray]  # of d, decades above X_MIN
    acc_id: Callable[[np.ndarray], np.ndarray]
    wrong: frozenset[str]


FLAT_ID = lambda d: REF_ID + 0 * d  # noqa: E731
FAMILIES = [
    Family("zero gap (invariant method)", lambda d: 0 * d, FLAT_ID, frozenset({"does not close", "collapses"})),
    Family("power law to zero", lambda d: 0.3 * 10 ** (-0.8 * d), FLAT_ID, frozenset({"does not close", "collapses"})),
    Family("floor 0.15 above tolerance", lambda d: 0.15 + 0.25 * 10 ** (-0.5 * d), FLAT_ID,
           frozenset({"closes", "projected to close", "collapses"})),
    Family("log-linear, floor 0.05 just past range", lambda d: np.maximum(0.05, 0.40 - 0.15 * d), FLAT_ID,
           frozenset({"closes", "collapses"})),
    Family("sigmoid inside range", lambda d: 0.4 * sigmoid(4 * (1 - d)), FLAT_ID,
           frozenset({"does not close", "collapses"})),
    Family("sigmoid one decade past range", lambda d: 0.4 * sigmoid(4 * (3 - d)), FLAT_ID,
           frozenset({"closes", "collapses"})),
    Family("ID collapse (gap shrinks, ID falls to 0.50)", lambda d: 0.17 - 0.08 * d, lambda d: 0.80 - 0.15 * d,
           frozenset({"closes", "projected to close", "does not close"})),
    Family("invariant transition, ID 0.85 -> 0.75", lambda d: 0.5 * sigmoid(4 * (1 - d)),
           lambda d: REF_ID + 0.1 * sigmoid(4 * (1 - d)), frozenset({"does not close", "collapses"})),
    Family("bump (double descent), then to zero",
           lambda d: 0.3 * 10 ** (-0.8 * d) + 0.12 * np.exp(-(((d - 1) / 0.25) ** 2) / 2), FLAT_ID,
           frozenset({"does not close", "collapses"})),
]


def with_draws(runs: pd.DataFrame, draws: int, sd_id: float, sd_wg: float, rng: np.random.Generator) -> pd.DataFrame:
    """Each run as `draws` hyperparameter draws: draw 0 reaches the truth, every other one falls short of it by
    |N(0, DRAW_SD)| in ID and worst-group accuracy (one shortfall per replicate, point, baseline and draw, as a
    learning rate too small or too large does at that point). A run's own quality (s.d. `sd_id`) shows in its
    test ID, its worst-group and its validation accuracy alike, which also has its own VAL_SD of noise (250
    samples per validation environment): so a draw that validates well by luck also tests well, the winner's
    curse of choosing per seed."""
    n = len(runs)
    out = runs.loc[runs.index.repeat(draws)].reset_index(drop=True)
    out["draw"] = np.tile(np.arange(draws), n)
    cell = out.groupby(["regime", "model.width", "baseline", "draw"]).ngroup().to_numpy()
    short = np.abs(rng.normal(0, DRAW_SD, cell.max() + 1))[cell] * (out["draw"].to_numpy() > 0)
    own = rng.normal(0, sd_id, len(out))
    truth_id = out["acc_id"].to_numpy() - short
    out["acc_id"] = truth_id + own
    out["val/acc_id"] = truth_id + own + rng.normal(0, VAL_SD, len(out))
    out["acc_wg"] = out["acc_wg"].to_numpy() - short + own + rng.normal(0, np.sqrt(max(sd_wg**2 - sd_id**2, 0)),
                                                                          len(out))
    out["hparams"] = out["draw"].map(lambda h: f'{{"model.lr": {h}}}')
    return out


def sweep(family: Family, points: int, seeds: int, noise: str, replicates: int,
          rng: np.random.Generator, draws: int = 1) -> pd.DataFrame:
    """`replicates` simulated sweeps, each its own regime: the method and the reference at each scale point and
    seed, one row per run; with `draws` above 1, that many hyperparameter draws of each (`with_draws`), draw 0 at
    the truth."""
    sd_wg, bias, sd_id = NOISE[noise]
    d = np.tile(np.repeat(np.linspace(0, DECADES, points), seeds), replicates)
    n = d.size
    gap = family.gap(d)
    level = np.clip(1 - gap / 0.1, 0, 1)  # how level the method's groups are: the minimum's bias scales with it
    common = {"regime": np.repeat(np.arange(replicates), points * seeds), "params": X_MIN * 10**d,
              "model.width": np.tile(np.repeat(np.arange(points), seeds), replicates),
              "seed": np.tile(np.arange(seeds), points * replicates), "ceiling": CEILING}
    truth = {"Oracle": (REF_WG + bias + 0 * d, REF_ID + 0 * d),  # (worst-group, ID accuracy) of each baseline
             "Method": (REF_WG - gap + bias * level, family.acc_id(d))}
    if draws > 1:
        runs = pd.concat([pd.DataFrame({**common, "baseline": b, "acc_wg": wg, "acc_id": acc})
                          for b, (wg, acc) in truth.items()], ignore_index=True)
        return with_draws(runs, draws, sd_id, sd_wg, rng)
    return pd.concat([pd.DataFrame({**common, "baseline": b, "acc_wg": wg + rng.normal(0, sd_wg, n),
                                    "acc_id": acc + rng.normal(0, sd_id, n)}) for b, (wg, acc) in truth.items()],
                     ignore_index=True)


def rates(family: Family, points: int, seeds: int, noise: str, replicates: int, seed: int,
          confidence: float = CONFIDENCE, draws: int = 1, per: str = DEFAULT_PER) -> Counter:
    """How often each verdict word is given to the method over `replicates` sweeps, intervals at `confidence`;
    with `draws`, after the report's selection (`select.select`, `id_val`, per point or per seed)."""
    runs = sweep(family, points, seeds, noise, replicates, np.random.default_rng(seed), draws)
    if draws > 1:
        runs = select(runs, "id_val", ["regime", "model.width"], per)[0]
    runs = add_endpoints(runs, ["model.width"], "Oracle")
    method = runs[runs["baseline"] == "Method"]
    return Counter(judge(group, "params", "confusion_gap", False, confidence=confidence)[1]
                   for _, group in method.groupby("regime"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="50 replicates per setting")
    parser.add_argument("--family", type=str, default="", help="only families whose name contains this")
    parser.add_argument("--confidence", type=float, default=CONFIDENCE, help="each verdict's level (default 0.95)")
    parser.add_argument("--bonferroni", type=int, default=1, metavar="M",
                        help="correct over M verdicts: each at 1 - (1 - confidence) / M, as the report's "
                             "--familywise bonferroni over M verdicts")
    parser.add_argument("--draws", type=int, default=1,
                        help="hyperparameter draws per scale point, chosen by id_val as the report does (`with_draws`)")
    parser.add_argument("--select-per", choices=list(PER), default=DEFAULT_PER,
                        help="with --draws: choose per scale point (mean over seeds) or per seed (DomainBed)")
    args = parser.parse_args()
    reps = 50 if args.quick else args.replicates
    level = bonferroni(args.confidence, args.bonferroni)
    start = time.perf_counter()
    print(f"{reps} replicates per setting; intervals at {percent(level)} per verdict"
          + (f" (Bonferroni over {args.bonferroni}: {percent(args.confidence)} family-wise)" if args.bonferroni > 1
             else "") + (f"; {args.draws} draws chosen by id_val per {args.select_per}" if args.draws > 1 else "")
          + "; wrong set in brackets; rates in % (closes / projected / does not close / collapses / "
          "inconclusive)\n")
    print("| family [wrong] | points | seeds | noise | " + " | ".join(WORDS) + " | wrong |")
    print("|---|---|---|---|" + "---|" * (len(WORDS) + 1))
    worst = {}
    for i, family in enumerate(f for f in FAMILIES if args.family in f.name):
        for j, (points, seeds, noise) in enumerate(itertools.product((3, 5, 7), (3, 5), NOISE)):
            words = rates(family, points, seeds, noise, reps, seed=1000 * i + j, confidence=level,
                          draws=args.draws, per=args.select_per)
            wrong = 100 * sum(words[w] for w in family.wrong) / reps
            worst[family.name] = max(worst.get(family.name, 0.0), wrong)
            print(f"| {family.name} [{', '.join(sorted(family.wrong))}] | {points} | {seeds} | {noise} | "
                  + " | ".join(f"{100 * words[w] / reps:.0f}" for w in WORDS) + f" | **{wrong:.1f}** |", flush=True)
    print("\n| family | worst wrong rate over settings (%) | goal <= 5% met? |\n|---|---|---|")
    for name, w in worst.items():
        print(f"| {name} | {w:.1f} | {'yes' if w <= 5 else 'no'} |")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
