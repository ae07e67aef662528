"""One tidy table from a sweep: a row per run x environment x metric, with the run's scale columns.

By default only the runs of the sweep file as it was last run (its `manifest.json`) are read, so runs of an
edited sweep file, left in the same folder, do not join the fits; `all_runs` reads every finished folder.
"""

import json
import math
from pathlib import Path

import pandas as pd

from testbed.errors import ConfigError
from testbed.files import write_atomic

MANIFEST = "manifest.json"
# Run-level columns that are not metrics (everything else in `wide` is a metric).
CONVERGENCE = ["converged", "criterion", "train_loss", "train_acc"]
ONE_CLASS_SHARE = 0.99  # a run whose test predictions are this share one class in every group is degenerate
# The results.json entries beside the metrics that record how a run went: the curves the dose sections read
# (`testbed.analysis.dose`: Online's, DAgger's), ContinualFinetune's phases (`testbed.analysis.continual`) and a
# staged run's parent (`testbed.sweep.stages`). They travel as JSON text in the `records` column, so that a
# published results.csv gives the report its run folders give.
RECORDS = ("online", "dagger", "phases", "parent")


def parse_key(key: str) -> tuple[str, str, str, str, float | None]:
    """`test/ood:corr=0.10/acc` -> (stage, env, role, metric, env_corr); aggregates have env "all".
    Environments without a set correlation (`ood:test` of a WILDS split) get env_corr None."""
    stage, *env, metric = key.split("/")
    if not env:
        return stage, "all", "", metric, None
    role, _, rest = env[0].partition(":")
    return stage, env[0], role, metric, float(rest[5:]) if rest.startswith("corr=") else None


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | float) else json.dumps(value)


def baseline_label(res: dict) -> str:
    """The run's baseline as the report's rows name it. Online and DAgger runs carry their `fraction` (of queries
    intervened on, of visited states the expert labels): runs of two fractions are two methods, and one verdict
    row over both would fit a trend through a mix of doses (`Online(fraction=0.1)`)."""
    dose = next((res[key]["fraction"] for key in ("online", "dagger") if "fraction" in (res.get(key) or {})), None)
    return res["model"] if dose is None else f"{res['model']}(fraction={dose:g})"


def one_class(res: dict) -> int | None:
    """The class a degenerate run predicts for (nearly) every test sample, else None. A constant predictor (a
    width-2 model that collapsed) scores the class prior in distribution and reliance 0, and a train-loss plateau
    still calls it converged; it is read from the per-group test accuracies (`test/.../acc_g{g}`): group
    g = y * n_attr + a holds label g // n_attr, so a run that predicts class c everywhere is right on at least
    ONE_CLASS_SHARE of each of c's groups and on at most 1 - ONE_CLASS_SHARE of every other group, in every
    environment (all its correct predictions fall on one class: accuracy at that class's prior). Runs that do not
    record `n_attr` (older ones) are read with the environments' default n_attr = n_classes (`envs/base.py`); runs
    without per-group accuracies are not checked."""
    accs: dict[int, list[float]] = {}
    for key, value in res["metrics"].items():
        stage, *_, metric = key.split("/")
        if stage == "test" and metric.startswith("acc_g") and metric[5:].isdigit():
            accs.setdefault(int(metric[5:]), []).append(value)
    if not accs:
        return None
    n_attr = res.get("n_attr") or math.isqrt(max(accs) + 1)
    if "n_attr" not in res and n_attr**2 != max(accs) + 1:  # no default layout fits these groups
        return None
    for c in {g // n_attr for g in accs}:
        if all(min(v) >= ONE_CLASS_SHARE if g // n_attr == c else max(v) <= 1 - ONE_CLASS_SHARE
               for g, v in accs.items()):
            return c
    return None


def run_rows(run_dir: Path) -> list[dict]:
    """The rows of one run. Fields that older runs lack (hparams, draw, convergence, ceiling) are left empty."""
    run = json.loads((run_dir / "run.json").read_text())
    res = json.loads((run_dir / "results.json").read_text())
    axes = {k: _plain(v) for k, v in run["axes"].items()}
    conv = res.get("convergence") or {}
    base = {"run": run_dir.name, "sweep": run["sweep"], "baseline": baseline_label(res), "seed": run["seed"],
            "params": res["params"], "n_train": res["n_train"], "steps": res["steps"], "flops": res["train_flops"],
            "corr": res["train_corr"], "wall_time_s": res["wall_time_s"],
            "sweep_stage": run.get("stage") or "", "code": run.get("code") or "unrecorded", "draw": run.get("draw", 0),
            "hparams": json.dumps(run.get("hparams") or {}, sort_keys=True),
            **{k: conv.get(k) for k in CONVERGENCE}, "ceiling": res.get("ceiling"),
            "spurious_accuracy": res.get("spurious_accuracy"), "one_class": one_class(res),
            "records": json.dumps({k: res[k] for k in RECORDS if k in res}), **axes}
    rows = []
    for key, value in res["metrics"].items():
        stage, env, role, metric, env_corr = parse_key(key)
        rows.append({**base, "stage": stage, "env": env, "role": role, "env_corr": env_corr,
                     "metric": metric, "value": value})
    return rows


def current_runs(sweep_dir: Path, all_runs: bool = False) -> list[Path]:
    """The finished run folders to read: those the manifest lists (all finished ones with `all_runs`, or when
    the sweep predates manifests)."""
    finished = [d for d in sorted(sweep_dir.iterdir()) if (d / "done").exists()]
    manifest = sweep_dir / MANIFEST
    if all_runs or not manifest.exists():
        return finished
    ids = set(json.loads(manifest.read_text())["runs"])
    return [d for d in finished if d.name in ids]


def collect(sweep_dir: Path, all_runs: bool = False) -> pd.DataFrame:
    """The finished runs of `sweep_dir` (see `current_runs`); in a folder with no run folders, its `results.csv`
    (a published study, `results/study/`). A run whose files cannot be read is skipped with one line naming it."""
    folders = current_runs(sweep_dir, all_runs)
    if not folders and (sweep_dir / "results.csv").exists():  # a published table without its run folders
        return read_table(sweep_dir / "results.csv")
    rows, skipped = [], []
    for d in folders:
        try:
            rows += run_rows(d)
        except (OSError, ValueError, KeyError, TypeError) as err:
            skipped.append(f"{d}: results.json or run.json unreadable ({type(err).__name__}: {err})")
    if not rows:  # the error alone, one line
        why = f"; skipped {skipped[0]}" + (f" and {len(skipped) - 1} more" if len(skipped) > 1 else "") if skipped \
            else "; run `testbed sweep` first"
        raise ConfigError(f"sweep_dir: no readable finished runs in {sweep_dir}{why}")
    for line in skipped:
        print(f"skipped {line}")
    return pd.DataFrame(rows)


def axis_columns(table: pd.DataFrame) -> list[str]:
    """The sweep's axis columns of a tidy table (every column that `run_rows` does not name itself)."""
    own = {"run", "sweep", "baseline", "seed", "params", "n_train", "steps", "flops", "corr", "wall_time_s",
           "sweep_stage", "code", "draw",
           "hparams", *CONVERGENCE, "ceiling", "spurious_accuracy",
           "one_class", "records", "stage", "env", "role", "env_corr", "metric", "value"}
    return [c for c in table.columns if c not in own]


def method(runs: pd.DataFrame) -> pd.Series:
    """Each run's class (`Online`), the start of its baseline label (`Online(fraction=0.1) (stage online)`:
    `baseline_label`, `with_stages`)."""
    return runs["baseline"].str.extract(r"^([^( ]+)", expand=False)


def with_stages(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with a baseline trained in several stages of the sweep named by stage (`ERM (stage long)`): two stages
    of one class (ERM for 5 epochs and for 50) are two methods, not six seeds of one."""
    if "sweep_stage" not in runs:
        return runs
    several = runs.groupby("baseline")["sweep_stage"].transform("nunique") > 1
    named = runs["baseline"] + " (stage " + runs["sweep_stage"].astype(str) + ")"
    return runs.assign(baseline=named.where(several, runs["baseline"]))


def scale_axis(runs: pd.DataFrame, axis: str) -> bool:
    """Whether a sweep axis is a scale: a compute budget (`trainer.*`), or a number whose values change the model's
    size or the training set's (`model.width`, `data.n_train`, `data.n_demos`), which the fits put on an x axis."""
    if axis in budget_columns(runs):
        return True
    values = runs[axis].dropna()
    if values.empty or not pd.api.types.is_numeric_dtype(values):
        return False
    sizes = runs.loc[values.index]
    return any(sizes.groupby(axis)[size].apply(frozenset).nunique() > 1 for size in ("params", "n_train"))


def condition_axes(runs: pd.DataFrame, axes: list[str]) -> list[str]:
    """The axes that make a condition (one row per run in `runs`): every axis that each run has, apart from the baseline
    (`model`, and the dose that its label names) and the scales. An axis only some runs have (a stage's, such as
    Online's `model.fraction`) belongs to their method and is told apart by selection's scale points, not by the
    condition."""
    named = ("model", "model.fraction")  # in the baseline's label (`baseline_label`)
    return [a for a in axes if a not in named and a in runs and runs[a].notna().all() and not scale_axis(runs, a)]


def condition(runs: pd.DataFrame, axes: list[str]) -> pd.Series:
    """The condition of each run: the one definition every analysis groups by (the report's and figures'
    "regime"). It is everything that tells runs apart but the baseline, the scale axes, the seed and the draw:
    the sweep's config file and every other axis (a label noise, a list of training correlations, a learning rate
    swept as an axis). Runs of one condition differ only in what a fit puts on its x axis."""
    parts = condition_axes(runs, axes)
    if not parts:
        return pd.Series("all", index=runs.index)

    def name(row: pd.Series) -> str:
        return ", ".join(str(row[a]) if a == "config" else f"{a}={row[a]}" for a in parts)

    return runs.apply(name, axis=1).astype(str)


def read_table(path: Path) -> pd.DataFrame:
    """A tidy table as `save_table` wrote it: text columns stay text ("" where empty, as `run_rows` leaves them),
    so that the report of a published results.csv is the report of its runs."""
    text = ["run", "sweep", "baseline", "sweep_stage", "code", "hparams", "records", "stage", "env", "role", "metric"]
    table = pd.read_csv(path, dtype={c: str for c in text}, keep_default_na=False, na_values=[""])
    for column in ("sweep_stage", "hparams"):
        if column in table:
            table[column] = table[column].fillna("")
    if "records" in table:  # written on each run's first row only (`save_table`)
        table["records"] = table.groupby("run")["records"].transform("first").fillna("{}")
    return table


def save_table(table: pd.DataFrame, sweep_dir: Path) -> Path:
    """results.csv: the tidy table, each run's `records` (its curves, which can be long) on its first row only."""
    path = sweep_dir / "results.csv"
    if "records" in table:
        table = table.assign(records=table["records"].where(~table.duplicated("run"), ""))
    write_atomic(path, table.to_csv(index=False))
    return path


def wide(table: pd.DataFrame, stage: str = "test", extra: tuple[str, ...] = ("val", "probe")) -> pd.DataFrame:
    """One row per run: the run's columns, a column per aggregate metric (env "all") of `stage`, and
    `{other}/{metric}` columns for the aggregates of the `extra` stages (validation, probe)."""
    agg = table[table.env == "all"]
    keys = [c for c in agg.columns if c not in ("stage", "env", "role", "env_corr", "metric", "value")]
    runs = table.drop_duplicates("run")[keys].set_index("run")
    main = agg[agg.stage == stage].pivot_table(index="run", columns="metric", values="value")
    parts = [runs, main]
    for other in extra:
        sub = agg[agg.stage == other]
        if len(sub):
            parts.append(sub.pivot_table(index="run", columns="metric", values="value").add_prefix(f"{other}/"))
    out = pd.concat(parts, axis=1, join="outer").loc[runs.index]
    out.columns.name = None
    return out.reset_index()


def at_largest(runs: pd.DataFrame, col: str, by: str | None = "regime") -> pd.DataFrame:
    """Runs at the largest value of `col` within each group of `by` (among all runs if None)."""
    return runs[runs[col] == (runs[col].max() if by is None else runs.groupby(by)[col].transform("max"))]


def budget_columns(runs: pd.DataFrame) -> list[str]:
    """The sweep's compute-budget axes: trainer settings such as `trainer.max_steps` swept as axes."""
    return [c for c in runs.columns if c.startswith("trainer.")]


def budget_varies(runs: pd.DataFrame) -> bool:
    """Whether a compute-budget axis takes more than one value: only then do FLOPs vary apart from the model and
    the data, and a fit or figure against FLOPs says something the parameter and data ones do not."""
    return any(runs[c].nunique() > 1 for c in budget_columns(runs))


def along(runs: pd.DataFrame, axis: str, by: str | None = "regime") -> pd.DataFrame:
    """The runs (one row each) that measure one scale axis, every other scale held at its largest value in each
    group of `by` (a regime, or a figure's facet): parameters and training samples at the largest budget; FLOPs
    as the budget axes vary at the largest model and training set (every run when no budget is swept), each
    run's FLOPs the mean of its scale point's, which early stopping spreads over seeds."""
    budget = budget_columns(runs)
    held = {"params": ["n_train", *budget], "n_train": ["params", *budget],
            "flops": ["params", "n_train"] if budget else []}[axis]
    for col in held:
        runs = at_largest(runs, col, by)
    if axis == "flops":
        point = ["regime", "baseline", "params", "n_train", *budget]
        runs = runs.assign(flops=runs.groupby(point, dropna=False)["flops"].transform("mean"))
    return runs


def with_reversed(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """`runs` with `acc_reversed`: each run's accuracy on its shifted environment of lowest correlation (the one
    that reverses the training correlation, e.g. corr=0.10), which pooled OOD accuracy averages with the others."""
    ood = table[(table.stage == "test") & (table.role == "ood") & (table.metric == "acc") & table.env_corr.notna()]
    if ood.empty:
        return runs
    lowest = ood.loc[ood.groupby("run").env_corr.idxmin(), ["run", "value", "env_corr"]]
    lowest = lowest.rename(columns={"value": "acc_reversed", "env_corr": "reversed_corr"})
    return runs.merge(lowest, on="run", how="left")
